//! moongate's own HTTP/1.1 server side for the proxy listeners: the request head parsed once
//! (with the framing checks nginx makes folded into that parse), the request body read in the
//! request's task, the response head and body written with as few writes as the body allows,
//! and the connection loop (keep-alive, pipelining, `100 Continue`, graceful shutdown). hyper's
//! server spent about 3,700 instructions per request on its dispatcher and buffers, and a
//! second parser had to follow its bytes to see what it hid. HTTP/2 stays on hyper.
//!
//! One module per step: [`head`] (parsing), [`link`] (the shared connection), [`body`] (the
//! request body), [`write`] (the response), [`conn`] (the loop).

pub mod body;
pub mod conn;
pub mod head;
pub mod link;
pub mod write;

pub use body::RequestBody;
pub use conn::serve;
pub use head::Verdict;
pub use link::BodyFault;
