# Run with `cmake -P`: writes OUTPUT, a C++ source defining
# `std::string_view parley::FUNCTION()` (declared in HEADER) that returns the
# bytes of INPUT as one raw string literal. Used through add_custom_command,
# so it runs only when INPUT changes.
foreach(var INPUT OUTPUT HEADER FUNCTION)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "embed_text.cmake: -D${var}=... is required")
  endif()
endforeach()
file(READ "${INPUT}" text)
set(delimiter "parley_embed")
string(FIND "${text}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "embed_text.cmake: ${INPUT} contains the raw string delimiter ${delimiter}")
endif()
get_filename_component(name "${INPUT}" NAME)
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${name} by cmake/embed_text.cmake; do not edit.\n"
  "#include \"${HEADER}\"\n\n"
  "namespace parley {\n\n"
  "std::string_view ${FUNCTION}() {\n"
  "  static constexpr char text[] = R\"${delimiter}(${text})${delimiter}\";\n"
  "  return {text, sizeof text - 1};\n"
  "}\n\n"
  "} // namespace parley\n")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
