//! Exchanges with a test server on the same executor: what each outcome does to the
//! replica's statistics and circuit, and which exchanges count as client traffic.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::config::{Strategy, Transport};
use crate::http::Limits;

fn server(strategy: &str, weight: u32, timeout: &str) -> ServerConfig {
    let text = format!(
        "[[servers]]\nname = \"ev\"\nreplicas = [{{ url = \"http://127.0.0.1:1/mcp\" }}, \
         {{ url = \"http://127.0.0.1:2/mcp\", weight = {weight} }}]\n\
         strategy = \"{strategy}\"\ntimeout = \"{timeout}\"\n"
    );
    let config = crate::config::Config::from_toml_str(&text, "t").expect("config");
    config.servers[0].clone()
}

#[test]
fn strategy_and_weights_change_in_place_and_nothing_else_does() {
    let config = server("round_robin", 1, "10s");
    let replicas = match &config.transport {
        Transport::Http { replicas, .. } => replicas.clone(),
        Transport::Stdio(_) => unreachable!("an HTTP server"),
    };
    let client = UpstreamClient::new(0, config, &replicas);
    client.balancer.stats[0].picked();
    assert!(client.retune(&server("weighted", 5, "10s")));
    assert_eq!(client.balancer.strategy(), Strategy::Weighted);
    assert_eq!(client.balancer.stats[1].weight.get(), 5);
    // The statistics are the same objects: nothing was reset.
    assert_eq!(client.balancer.stats[0].snapshot(Instant::now()).picks, 1);
    // Any other difference needs a new client.
    assert!(!client.retune(&server("weighted", 5, "3s")));
    assert_eq!(client.balancer.stats[1].weight.get(), 5);
}

/// What a test server answers: status, headers and body.
type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// A one-replica client of an HTTP server on this executor that answers each request with
/// what `respond` makes of it, keeping connections alive.
async fn serving(
    threshold: u32,
    respond: impl Fn(&crate::http::Request) -> Answer + 'static,
) -> Rc<UpstreamClient> {
    let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let respond = Rc::new(respond);
    glommio::spawn_local(async move {
        while let Ok(stream) = listener.accept().await {
            let respond = respond.clone();
            glommio::spawn_local(async move {
                let mut conn = crate::http::ServerConn::new(stream);
                let limits = Limits::default();
                while let Ok(Some(request)) = conn.read_request(&limits).await {
                    let (status, headers, body) = respond(&request);
                    let headers: Vec<(&str, &str)> =
                        headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    if conn
                        .write_response(status, &headers, &body, true)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
            .detach();
        }
    })
    .detach();
    client_of(port, threshold)
}

/// A one-replica client of a server that answers every request with `status` (and a short
/// text body).
async fn answering(status: u16, threshold: u32) -> Rc<UpstreamClient> {
    answering_with(status, Some("7"), threshold).await
}

/// [`answering`] with this `Retry-After` (or none).
async fn answering_with(
    status: u16,
    retry_after: Option<&'static str>,
    threshold: u32,
) -> Rc<UpstreamClient> {
    serving(threshold, move |_| {
        let mut headers = vec![("Content-Type", "text/plain".to_owned())];
        if let Some(value) = retry_after {
            headers.push(("Retry-After", value.to_owned()));
        }
        (status, headers, b"no healthy upstream".to_vec())
    })
    .await
}

/// Sends client requests until the one-replica `client` is ejected (at most `tries`) and
/// returns how long for, in ms (0: never ejected).
async fn ejected_after(client: &Rc<UpstreamClient>, tries: u32) -> u64 {
    for _ in 0..tries {
        let sent = client.post(0, Traffic::Client, Some("s"), Some("v"), b"{}");
        assert!(sent.await.is_err(), "an error status is not an answer");
        let s = client.balancer.stats[0].snapshot(Instant::now());
        if s.ejected_for_ms > 0 {
            return s.ejected_for_ms;
        }
    }
    0
}

#[test]
fn retry_after_sets_how_long_a_replica_stays_out() {
    crate::http::run_glommio(|| async {
        // Longer than the circuit's own first ejection (5 s): the replica's pause governs.
        let client = answering_with(503, Some("40"), 3).await;
        let out = ejected_after(&client, 3).await;
        assert!((35_000..=40_000).contains(&out), "{out} ms");
        let last = client.balancer.stats[0].snapshot(Instant::now()).last_error;
        assert!(last.unwrap_or_default().contains("Retry-After: 40"));

        // 429 with a pause: the replica is out, the error is the replica's.
        let client = answering_with(429, Some("20"), 3).await;
        let error = client
            .post(0, Traffic::Client, Some("s"), Some("v"), b"{}")
            .await
            .err()
            .expect("a 429 is not an answer");
        assert!(error.is_replica_failure(), "{error}");
        let out = ejected_after(&client, 2).await;
        assert!((15_000..=20_000).contains(&out), "{out} ms");

        // A 429 without one stays the request's error and never moves traffic.
        let client = answering_with(429, None, 3).await;
        assert_eq!(ejected_after(&client, 6).await, 0);
        // So does one whose pause is garbage.
        let client = answering_with(429, Some("soon"), 3).await;
        assert_eq!(ejected_after(&client, 6).await, 0);

        // A 503 is a gateway failure whatever its header says: garbage or a date long
        // past leave the circuit's own 5 s; an absurd pause is capped.
        for value in ["soon", "-30", "Sun, 06 Nov 1994 08:49:37 GMT"] {
            let client = answering_with(503, Some(value), 3).await;
            let out = ejected_after(&client, 3).await;
            assert!((1..=5_000).contains(&out), "{value}: {out} ms");
        }
        for value in ["99999999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"] {
            let client = answering_with(503, Some(value), 3).await;
            let out = ejected_after(&client, 3).await;
            let cap = crate::balance::HOLD_MAX.as_millis() as u64;
            assert!((cap - 5_000..=cap).contains(&out), "{value}: {out} ms");
        }
    });
}

#[test]
fn an_exchange_dropped_before_its_answer_is_no_longer_in_flight() {
    crate::http::run_glommio(|| async {
        // A server that reads requests and never answers them.
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        glommio::spawn_local(async move {
            while let Ok(stream) = listener.accept().await {
                glommio::spawn_local(async move {
                    let mut conn = crate::http::ServerConn::new(stream);
                    while let Ok(Some(_)) = conn.read_request(&Limits::default()).await {}
                })
                .detach();
            }
        })
        .detach();
        let client = client_of(port, 3);
        let call = client.post(0, Traffic::Client, Some("s"), Some("v"), b"{}");
        // The client went away: its task, and this exchange with it, is dropped.
        let cut =
            glommio::timer::timeout(Duration::from_millis(200), async { Ok(call.await) }).await;
        assert!(cut.is_err(), "a server that never answers answered");
        let s = client.balancer.stats[0].snapshot(Instant::now());
        assert_eq!(s.inflight, 0, "{s:?}");
        // No verdict either way: it neither failed nor answered.
        assert_eq!((s.exchanges, s.consecutive_failures), (0, 0), "{s:?}");
    });
}

/// A one-replica client of `127.0.0.1:{port}` ejecting after `threshold` failures.
fn client_of(port: u16, threshold: u32) -> Rc<UpstreamClient> {
    let text = format!(
        "[[servers]]\nname = \"ev\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n\
         failover_threshold = {threshold}\n"
    );
    let config = crate::config::Config::from_toml_str(&text, "t").expect("config");
    let config = config.servers[0].clone();
    let replicas = match &config.transport {
        Transport::Http { replicas, .. } => replicas.clone(),
        Transport::Stdio(_) => unreachable!("an HTTP server"),
    };
    UpstreamClient::new(0, config, &replicas)
}

/// A one-replica client of a minimal stateful MCP server on this executor: it refuses the
/// `server/discover` probe (400, as a server of the stateful era does), opens session
/// `s1` on `initialize`, accepts notifications (202) and answers any other request with an
/// empty result.
async fn stateful_server(threshold: u32) -> Rc<UpstreamClient> {
    serving(threshold, |request| {
        let message: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let id = message["id"].clone();
        let json = || ("Content-Type", "application/json".to_owned());
        match message["method"].as_str().unwrap_or_default() {
            "server/discover" => (400, vec![json()], Vec::new()),
            "initialize" => {
                let result = serde_json::json!({
                    "jsonrpc": "2.0", "id": id, "result": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "serverInfo": {"name": "t", "version": "1"},
                    },
                });
                let headers = vec![json(), ("Mcp-Session-Id", "s1".to_owned())];
                (200, headers, result.to_string().into_bytes())
            }
            m if m.starts_with("notifications/") => (202, Vec::new(), Vec::new()),
            _ => {
                let result = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {}});
                (200, vec![json()], result.to_string().into_bytes())
            }
        }
    })
    .await
}

#[test]
fn session_set_up_and_discovery_are_not_client_traffic() {
    crate::http::run_glommio(|| async {
        let client = stateful_server(3).await;
        let session = crate::upstream::session::UpstreamSession::new(
            client.clone(),
            Bytes::from_static(br#"{"capabilities":{},"clientInfo":{"name":"t","version":"1"}}"#),
            None,
        );
        // The proxy's own: discover probe, initialize, initialized, then a list as
        // discovery sends it.
        session
            .request("tools/list", b"{}")
            .await
            .expect("tools/list answered");
        let s = client.balancer.stats[0].snapshot(Instant::now());
        assert_eq!(
            s.exchanges, 4,
            "discover, initialize, initialized, tools/list: {s:?}"
        );
        assert_eq!((s.requests, s.failures, s.inflight), (0, 0, 0), "{s:?}");
        assert_eq!(s.ewma_us, None, "set-up is no latency sample: {s:?}");
        assert!(client.replica_latency(0).is_none());
        // Client requests are counted, and only they.
        let call = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#;
        for _ in 0..3 {
            session
                .send(call, false)
                .await
                .expect("tools/call answered");
        }
        let s = client.balancer.stats[0].snapshot(Instant::now());
        assert_eq!((s.exchanges, s.requests, s.failures), (7, 3, 0), "{s:?}");
        assert!(
            s.ewma_us.is_some(),
            "client calls are latency samples: {s:?}"
        );
        let histogram = client
            .replica_latency(0)
            .expect("client latencies recorded");
        assert_eq!(histogram.len(), 3);
    });
}

#[test]
fn a_failed_session_set_up_still_counts_against_the_circuit() {
    crate::http::run_glommio(|| async {
        // Gateway failures: the discover probe and initialize both answered 503.
        let client = answering(503, 2).await;
        let session = crate::upstream::session::UpstreamSession::new(
            client.clone(),
            Bytes::from_static(b"{}"),
            None,
        );
        let error = session
            .established()
            .await
            .expect_err("503 opens no session");
        assert!(error.is_replica_failure(), "{error}");
        let s = client.balancer.stats[0].snapshot(Instant::now());
        assert!(
            s.ejected_for_ms > 0,
            "not ejected after 2 failed set-ups: {s:?}"
        );
        assert_eq!((s.exchanges, s.failed_exchanges), (2, 2), "{s:?}");
        assert_eq!((s.requests, s.failures, s.ewma_us), (0, 0, None), "{s:?}");
        assert!(client.replica_latency(0).is_none());

        // No answer at all: a port nobody listens on.
        let closed = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let client = client_of(port, 2);
        let session = crate::upstream::session::UpstreamSession::new(
            client.clone(),
            Bytes::from_static(b"{}"),
            None,
        );
        // Each attempt fails at the discover probe (nothing was sent, so nothing more is
        // tried on this one replica): two attempts reach the threshold.
        for _ in 0..2 {
            let error = session.established().await.expect_err("nothing listens");
            assert!(error.never_sent(), "{error}");
        }
        let s = client.balancer.stats[0].snapshot(Instant::now());
        assert!(
            s.ejected_for_ms > 0,
            "not ejected after refused set-ups: {s:?}"
        );
        assert_eq!((s.requests, s.ewma_us), (0, None), "{s:?}");
    });
}

#[test]
fn a_replica_answering_503_is_ejected_with_the_status_as_its_last_error() {
    crate::http::run_glommio(|| async {
        let client = answering(503, 3).await;
        for n in 1..=3 {
            let error = match client
                .post(0, Traffic::Client, Some("s"), Some("v"), b"{}")
                .await
            {
                Err(e) => e,
                Ok(_) => panic!("a 503 is not an answer"),
            };
            assert!(matches!(error, UpstreamError::Status { status: 503, .. }));
            let s = client.balancer.stats[0].snapshot(Instant::now());
            if n < 3 {
                assert_eq!((s.consecutive_failures, s.ejected_for_ms), (n, 0));
            } else {
                assert!(s.ejected_for_ms > 0, "not ejected after 3 503s: {s:?}");
            }
            let last = s.last_error.unwrap_or_default();
            assert!(
                last.contains("HTTP 503") && last.contains("Retry-After: 7"),
                "{last}"
            );
            assert!(last.contains("no healthy upstream"), "{last}");
        }
        assert!(!client.balancer.stats[0].available(Instant::now()));
        // A health check answered 503 is a miss, not a sign of life that would close the
        // circuit the requests just opened.
        assert!(!client.probe(0, Duration::from_secs(5)).await);
        let s = client.balancer.stats[0].snapshot(Instant::now());
        assert!(s.ejected_for_ms > 0 && s.failed_probes == 1, "{s:?}");
    });
}

#[test]
fn a_replica_answering_500_stays_in() {
    crate::http::run_glommio(|| async {
        let client = answering(500, 3).await;
        for _ in 0..10 {
            let error = match client
                .post(0, Traffic::Client, Some("s"), Some("v"), b"{}")
                .await
            {
                Err(e) => e,
                Ok(_) => panic!("a 500 is not a success"),
            };
            assert!(!error.is_replica_failure());
        }
        assert!(client.probe(0, Duration::from_secs(5)).await);
        let s = client.balancer.stats[0].snapshot(Instant::now());
        assert_eq!((s.consecutive_failures, s.ejected_for_ms), (0, 0), "{s:?}");
        assert!(client.balancer.stats[0].available(Instant::now()));
    });
}
