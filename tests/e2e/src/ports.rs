//! Free loopback ports: the kernel picks one for a throwaway listener.

use std::net::TcpListener;

use crate::error::{Error, Result};

pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding a free port"))?;
    let port = listener.local_addr().map_err(Error::io("reading a free port"))?.port();
    Ok(port)
}
