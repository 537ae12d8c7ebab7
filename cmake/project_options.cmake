# parley_warnings: the warning set every Parley target compiles with.
add_library(parley_warnings INTERFACE)
target_compile_options(parley_warnings INTERFACE
  -Wall -Wextra          # the common set
  -Wshadow               # a shadowed member is a bug in actor state lambdas
  -Wnon-virtual-dtor     # interfaces are deleted through base pointers
  -Wold-style-cast       # casts should say what they do
  -Wno-unused-parameter  # CAF handlers take atoms they do not read
  -Werror)

# parley_options: standard, sanitizers and defines shared by every target.
add_library(parley_options INTERFACE)
target_compile_features(parley_options INTERFACE cxx_std_17)
# Debian's libpqxx config lacks this although the header-only code supports it.
target_compile_definitions(parley_options INTERFACE PQXX_HAVE_OPTIONAL=1
  BOOST_ASIO_NO_DEPRECATED BOOST_BEAST_USE_STD_STRING_VIEW)

option(PARLEY_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
option(PARLEY_TSAN "Build with ThreadSanitizer" OFF)
option(PARLEY_JEMALLOC "Link the parley binary with jemalloc" ON)
# jemalloc (Debian libjemalloc-dev) replaces glibc malloc in the parley
# binary: a turn allocates many small short-lived objects across threads
# (bench/RESULTS.md has the measurement). Not with the sanitizers, which
# bring their own allocator.
if(PARLEY_JEMALLOC AND NOT PARLEY_SANITIZE AND NOT PARLEY_TSAN)
  pkg_check_modules(JEMALLOC REQUIRED IMPORTED_TARGET jemalloc)
endif()
if(PARLEY_SANITIZE)
  target_compile_options(parley_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer)
  target_link_options(parley_options INTERFACE -fsanitize=address,undefined)
endif()
if(PARLEY_TSAN)
  target_compile_options(parley_options INTERFACE -fsanitize=thread)
  target_link_options(parley_options INTERFACE -fsanitize=thread)
endif()

# parley_add_module(NAME SOURCES... DEPS ...): one folder = one static library.
function(parley_add_module name)
  cmake_parse_arguments(M "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${M_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${M_DEPS} parley_options PRIVATE parley_warnings)
endfunction()
