//! Decoding client frames and encoding server frames (PROTOCOL.md §2, §3, §5).
//! STUB: being written.
