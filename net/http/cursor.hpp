#pragma once
// The opaque cursor of session listings (`GET /v1/sessions?cursor=`): the
// last row's creation time and id, hex-encoded. Decoding accepts exactly
// what encoding writes, so PostgreSQL never sees junk.

#include <string>

namespace parley::net {

std::string encode_cursor(const std::string& created_at, const std::string& id);

/// False unless `cursor` is one encode_cursor wrote (a timestamp in the
/// shape now_rfc3339() writes and a non-empty id).
bool decode_cursor(const std::string& cursor, std::string& created_at, std::string& id);

} // namespace parley::net
