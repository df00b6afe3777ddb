//! HTTP/1.1 framing for both sides of the proxy, and Server-Sent Events.
