//! STUB (being written by the HTTP helper): the minimum for the crate to compile.
use crate::assets::Assets;
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub enum Head {
    Partial,
    TooLarge,
    Bad,
    Complete(Request),
}
pub struct Request {
    pub method: String,
    pub target: String,
    pub head_len: usize,
    pub host: Option<String>,
    pub origin: Option<String>,
    pub websocket_upgrade: bool,
    pub keep_alive: bool,
}
impl Request {
    pub fn path(&self) -> &str {
        &self.target
    }
}
pub fn parse_head(_buf: &[u8]) -> Head {
    Head::Bad
}
pub struct Response {
    pub head: Vec<u8>,
    pub body: &'static [u8],
    pub keep_alive: bool,
}
pub fn respond(_req: &Request, _assets: &Assets, tls: bool) -> Response {
    error_response(404, tls)
}
pub fn error_response(_status: u16, _tls: bool) -> Response {
    Response {
        head: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        body: &[],
        keep_alive: false,
    }
}
pub fn origin_allowed(_origin: Option<&str>, _host: Option<&str>, _allowed: &[String]) -> bool {
    true
}
