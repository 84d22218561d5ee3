//! Session IDs (6 Crockford base32 characters) and resume tokens (32 random bytes, base64url).
//! STUB: being written.
