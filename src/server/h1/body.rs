//! The request body of an HTTP/1 request, read from the client connection in the task of the
//! request itself (whoever polls it: the upstream writer, a Lua `read_body`), with no channel
//! between the connection and the proxy.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::link::{BodyFault, BodySource};

/// A handle on the body of request `seq` of a connection; it reads nothing once the
/// connection has moved on to another request.
pub struct RequestBody {
    src: Rc<RefCell<dyn BodySource>>,
    seq: u64,
}

impl RequestBody {
    pub fn new(src: Rc<RefCell<dyn BodySource>>, seq: u64) -> RequestBody {
        RequestBody { src, seq }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyFault;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        // The link is borrowed only inside single polls, so this borrow cannot collide.
        let Ok(mut src) = self.src.try_borrow_mut() else {
            return Poll::Ready(Some(Err(BodyFault::Io(std::io::Error::other(
                "the client connection is busy",
            )))));
        };
        src.poll_body(self.seq, cx)
            .map(|r| r.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.src.try_borrow().is_ok_and(|s| s.body_ended(self.seq))
    }

    fn size_hint(&self) -> SizeHint {
        self.src
            .try_borrow()
            .map_or_else(|_| SizeHint::default(), |s| s.body_hint(self.seq))
    }
}
