//! Tests of the server side: parsing under partial reads, limits, smuggling, response framing.

use std::time::Duration;

use super::*;
use crate::http::mock::MockStream;
use crate::http::run_glommio;

/// Reads every request from `input` (fed `step` bytes at a time) until a clean end or error.
fn read_all(
    input: &'static [u8],
    step: usize,
    limits: Limits,
) -> (Vec<Request>, Option<HttpError>, Vec<u8>) {
    run_glommio(move || async move {
        let mut conn = ServerConn::new(MockStream::new(input, step));
        let mut reqs = Vec::new();
        let err = loop {
            match conn.read_request(&limits).await {
                Ok(Some(r)) => reqs.push(r),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        (reqs, err, conn.into_inner().written())
    })
}

fn read_one(input: &'static [u8]) -> Result<Request, HttpError> {
    let (mut reqs, err, _) = read_all(input, 1024, Limits::default());
    match err {
        Some(e) => Err(e),
        None => Ok(reqs.remove(0)),
    }
}

#[test]
fn byte_by_byte_request_with_body() {
    let input = b"POST /mcp?x=1 HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\naccept: text/event-stream\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
    let (reqs, err, _) = read_all(input, 1, Limits::default());
    assert!(err.is_none(), "{err:?}");
    let r = &reqs[0];
    assert_eq!(r.method, Method::Post);
    assert_eq!(r.path(), "/mcp");
    assert_eq!(r.query(), Some("x=1"));
    assert_eq!(r.header("HOST"), Some("h"));
    assert_eq!(
        r.headers("accept").collect::<Vec<_>>(),
        ["application/json", "text/event-stream"]
    );
    assert_eq!(&r.body[..], b"{\"a\":1}");
    assert!(r.keep_alive);
}

#[test]
fn pipelined_requests_in_one_read() {
    let input = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: h\r\n\r\nDELETE /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;e=1\r\nx\r\n0\r\nT: v\r\n\r\n";
    for step in [1, 5, input.len()] {
        let (reqs, err, _) = read_all(input, step, Limits::default());
        assert!(err.is_none(), "{err:?}");
        let got: Vec<_> = reqs
            .iter()
            .map(|r| (r.method.clone(), r.target.as_str(), &r.body[..]))
            .collect();
        assert_eq!(
            got,
            [
                (Method::Post, "/a", &b"abc"[..]),
                (Method::Get, "/b", b""),
                (Method::Delete, "/c", b"x")
            ]
        );
    }
}

#[test]
fn smuggling_and_malformed_heads() {
    let cases: &[(&[u8], u16)] = &[
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n-0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\n\tX: folded-first\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n  folded\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
    ];
    for (input, status) in cases {
        let input: &'static [u8] = input;
        let err = read_one(input).unwrap_err();
        assert_eq!(
            err.status(),
            Some(*status),
            "{:?}: {err:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn oversized_head_and_body() {
    let small = Limits {
        max_head_bytes: 64,
        max_headers: 2,
        max_body_bytes: 4,
        ..Limits::default()
    };
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabcde", 413),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 413),
    ];
    for (input, status) in cases {
        let input: &'static [u8] = input;
        for step in [1, 1000] {
            let (_, err, _) = read_all(input, step, small.clone());
            assert_eq!(
                err.and_then(|e| e.status()),
                Some(*status),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn truncated_messages() {
    for input in [
        &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc"[..],
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"GET / HTTP/1.1\r\nHost: h\r\nHost:",
    ] {
        assert!(matches!(read_one(input), Err(HttpError::Truncated)));
    }
    // Closing after blank lines, or right away, is a clean end.
    let (reqs, err, _) = read_all(b"\r\n", 1, Limits::default());
    assert!(reqs.is_empty() && err.is_none());
}

#[test]
fn keep_alive_rules() {
    let ka = |input: &'static [u8]| read_one(input).unwrap().keep_alive;
    assert!(ka(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert!(!ka(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n"
    ));
    assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
}

#[test]
fn expect_continue_answered_before_body() {
    let (reqs, _, written) = read_all(
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
        1,
        Limits::default(),
    );
    assert_eq!(&reqs[0].body[..], b"hi");
    assert_eq!(written, b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn idle_head_and_body_timeouts() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(20),
        head_timeout: Duration::from_millis(20),
        body_timeout: Duration::from_millis(20),
        ..Limits::default()
    };
    let l = limits.clone();
    let idle = run_glommio(move || async move {
        ServerConn::new(MockStream::hanging(b"", 1))
            .read_request(&l)
            .await
            .map(|r| r.is_none())
    });
    assert!(idle.unwrap());
    let l = limits.clone();
    let slow = run_glommio(move || async move {
        ServerConn::new(MockStream::hanging(b"GET / HT", 1))
            .read_request(&l)
            .await
            .map(|_| ())
    });
    assert!(matches!(slow, Err(HttpError::Timeout("head"))));
    let l = limits.clone();
    let slow_body = run_glommio(move || async move {
        let input = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nabc";
        ServerConn::new(MockStream::hanging(input, 1000))
            .read_request(&l)
            .await
            .map(|_| ())
    });
    assert!(matches!(slow_body, Err(HttpError::Timeout("body"))));
    // A keep-alive connection that goes quiet after a request ends cleanly.
    let after_one = run_glommio(move || async move {
        let mut conn = ServerConn::new(MockStream::hanging(
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            1000,
        ));
        let first = conn.read_request(&limits).await.map(|r| r.is_some());
        let second = conn.read_request(&limits).await.map(|r| r.is_none());
        (first.ok(), second.ok())
    });
    assert_eq!(after_one, (Some(true), Some(true)));
}

fn written_by(
    http10: bool,
    f: impl FnOnce(
        &mut ServerConn<MockStream>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>,
) -> Vec<Vec<u8>> {
    let mut conn = ServerConn::new(MockStream::new(b"", 1));
    conn.http10 = http10;
    futures_lite::future::block_on(f(&mut conn));
    conn.into_inner().writes
}

#[test]
fn response_is_one_write() {
    let writes = written_by(false, |c| {
        Box::pin(async {
            c.write_response(200, &[("Content-Type", "application/json")], b"{}", true)
                .await
                .unwrap()
        })
    });
    assert_eq!(
        writes,
        [
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                .to_vec()
        ]
    );
    let writes = written_by(true, |c| {
        Box::pin(async { c.write_response(202, &[], b"", false).await.unwrap() })
    });
    assert_eq!(
        writes.concat(),
        b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    let writes = written_by(true, |c| {
        Box::pin(async { c.write_response(204, &[], b"", true).await.unwrap() })
    });
    assert_eq!(
        writes.concat(),
        b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
    );
    let writes = written_by(false, |c| {
        Box::pin(async {
            assert!(c
                .write_response(200, &[("X", "a\r\nSet-Cookie: x")], b"", true)
                .await
                .is_err());
            assert!(c
                .write_response(200, &[("content-length", "1")], b"", true)
                .await
                .is_err());
        })
    });
    assert!(writes.is_empty());
}

#[test]
fn streamed_response_framing() {
    let writes = written_by(false, |c| {
        Box::pin(async {
            c.start_stream(200, &[("Content-Type", "text/event-stream")], true)
                .await
                .unwrap();
            c.write_chunk(b"data: 1\n\n").await.unwrap();
            c.write_chunk(b"").await.unwrap();
            c.write_chunk(&[b'x'; 26]).await.unwrap();
            c.finish_stream().await.unwrap();
            assert!(c.write_chunk(b"late").await.is_err());
        })
    });
    assert_eq!(
        writes.len(),
        4,
        "head, two chunks, terminator: one write each"
    );
    assert_eq!(
        writes[0],
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    assert_eq!(writes[1], b"9\r\ndata: 1\n\n\r\n");
    assert!(writes[2].starts_with(b"1a\r\nxxx"));
    assert_eq!(writes[3], b"0\r\n\r\n");
    let writes = written_by(true, |c| {
        Box::pin(async {
            c.start_stream(200, &[], true).await.unwrap();
            c.write_chunk(b"raw").await.unwrap();
            c.finish_stream().await.unwrap();
        })
    });
    assert_eq!(
        writes.concat(),
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nraw"
    );
}

/// Runs `gone` for at most 50 ms: true when it resolved (the client left).
async fn left<S>(conn: &mut ServerConn<S>) -> bool
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    glommio::timer::timeout(Duration::from_millis(50), async {
        conn.gone(64 * 1024).await;
        Ok(())
    })
    .await
    .is_ok()
}

#[test]
fn a_client_that_closes_is_gone_and_one_that_pipelines_keeps_its_request() {
    const FIRST: &[u8] = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    const SECOND: &[u8] = b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    run_glommio(|| async {
        let limits = Limits::default();
        // Closed after its request: gone.
        let mut conn = ServerConn::new(MockStream::new(FIRST, 7));
        assert!(conn.read_request(&limits).await.unwrap().is_some());
        assert!(left(&mut conn).await);

        // Sends the next request while the first is served, then waits: present, and the
        // pipelined request is read whole afterwards.
        let input = [FIRST, SECOND].concat();
        let mut conn = ServerConn::new(MockStream::hanging(&input, 5));
        let first = conn.read_request(&limits).await.unwrap().unwrap();
        assert_eq!(first.path(), "/a");
        assert!(!left(&mut conn).await);
        assert!(
            conn.next_request_begins(Duration::from_secs(1), futures_lite::future::pending())
                .await
        );
        let second = conn.read_request(&limits).await.unwrap().unwrap();
        assert_eq!(second.path(), "/b");
    });
}

#[test]
fn a_stop_closes_a_connection_waiting_for_its_next_request() {
    run_glommio(|| async {
        let mut conn = ServerConn::new(MockStream::hanging(b"", 5));
        assert!(
            !conn
                .next_request_begins(Duration::from_secs(60), async {})
                .await
        );
    });
}
