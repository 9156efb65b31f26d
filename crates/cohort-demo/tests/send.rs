//! `send` against a tiny loopback HTTP/1.1 server that records requests and answers from a
//! script, so retries and errors can be checked without a real Cohort server.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use base64::Engine;
use cohort_demo::{SendError, SendOptions, send};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
struct Recorded {
    request_line: String,
    authorization: Option<String>,
    body: Value,
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

struct Fake {
    base_url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

async fn fake_server(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let script: Script = Arc::new(script);
    let recorded = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorded = Arc::clone(&recorded);
            let script = Arc::clone(&script);
            tokio::spawn(async move { handle(stream, recorded, script).await });
        }
    });
    Fake {
        base_url: format!("http://{addr}"),
        requests,
    }
}

async fn handle(mut stream: TcpStream, recorded: Arc<Mutex<Vec<Recorded>>>, script: Script) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut length = 0;
    let mut authorization = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    while buf.len() < header_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = serde_json::from_slice(&buf[header_end..header_end + length]).unwrap_or(Value::Null);
    let n = {
        let mut r = recorded.lock().unwrap();
        r.push(Recorded {
            request_line,
            authorization,
            body,
        });
        r.len() - 1
    };
    let reply = script(n);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn ok() -> Reply {
    Reply {
        status: 200,
        headers: vec![],
        body: r#"{"success":true}"#.into(),
    }
}

fn messages(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "type": "track",
                "event": "Product Viewed",
                "anonymousId": format!("anon-{}", i % 7),
                "messageId": format!("m-{i}"),
                "timestamp": "2026-03-01T00:00:00.000Z",
            })
        })
        .collect()
}

fn opts(base_url: &str) -> SendOptions {
    SendOptions {
        base_url: base_url.to_string(),
        write_key: "demo-key".into(),
        batch_size: 100,
        concurrency: 2,
        progress: false,
    }
}

#[tokio::test]
async fn delivers_everything_retrying_429_and_5xx() {
    let fake = fake_server(|n| match n {
        0 => Reply {
            status: 503,
            headers: vec![],
            body: r#"{"code":"unavailable","message":"starting"}"#.into(),
        },
        1 => Reply {
            status: 429,
            headers: vec![("Retry-After", "0")],
            body: r#"{"code":"rate_limited","message":"slow down"}"#.into(),
        },
        _ => ok(),
    })
    .await;
    let summary = send(messages(250), &opts(&fake.base_url)).await.unwrap();
    assert_eq!(summary.sent, 250);
    assert_eq!(summary.batches, 3);

    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 5, "3 batches + 2 retried attempts");
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("demo-key:")
    );
    let mut delivered = HashSet::new();
    for (i, r) in requests.iter().enumerate() {
        assert!(
            r.request_line.starts_with("POST /v1/batch "),
            "{}",
            r.request_line
        );
        assert_eq!(r.authorization.as_deref(), Some(expected_auth.as_str()));
        let sent_at = r.body["sentAt"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(sent_at).is_ok());
        let batch = r.body["batch"].as_array().unwrap();
        assert!(batch.len() <= 100);
        if i >= 2 {
            for m in batch {
                delivered.insert(m["messageId"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(delivered.len(), 250);
}

#[tokio::test]
async fn single_worker_keeps_list_order() {
    let fake = fake_server(|_| ok()).await;
    let mut o = opts(&fake.base_url);
    o.concurrency = 1;
    o.batch_size = 30;
    let summary = send(messages(95), &o).await.unwrap();
    assert_eq!((summary.sent, summary.batches), (95, 4));
    let order: Vec<String> = fake
        .requests
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.body["batch"].as_array().unwrap().clone())
        .map(|m| m["messageId"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..95).map(|i| format!("m-{i}")).collect();
    assert_eq!(order, expected);
}

#[tokio::test]
async fn unauthorised_is_reported_with_the_server_code() {
    let fake = fake_server(|_| Reply {
        status: 401,
        headers: vec![],
        body: r#"{"code":"invalid_write_key","message":"no source has this write key"}"#.into(),
    })
    .await;
    let err = send(messages(10), &opts(&fake.base_url)).await.unwrap_err();
    match &err {
        SendError::Rejected {
            status,
            code,
            message,
            batch,
        } => {
            assert_eq!(*status, 401);
            assert_eq!(code, "invalid_write_key");
            assert_eq!(message, "no source has this write key");
            assert_eq!(*batch, 0);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("401"));
    // Not retried.
    assert_eq!(fake.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_request_stops_the_send() {
    let fake = fake_server(|n| {
        if n == 1 {
            Reply {
                status: 400,
                headers: vec![],
                body: r#"{"code":"invalid_json","message":"batch[3]: missing type"}"#.into(),
            }
        } else {
            ok()
        }
    })
    .await;
    let mut o = opts(&fake.base_url);
    o.concurrency = 1;
    o.batch_size = 10;
    let err = send(messages(100), &o).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Rejected { status: 400, batch: 1, code, .. } if code == "invalid_json"),
        "{err:?}"
    );
    assert_eq!(fake.requests.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn options_are_validated_and_empty_input_needs_no_server() {
    let mut o = opts("http://127.0.0.1:9");
    let summary = send(Vec::new(), &o).await.unwrap();
    assert_eq!((summary.sent, summary.batches), (0, 0));
    o.batch_size = 0;
    assert!(matches!(
        send(messages(1), &o).await,
        Err(SendError::InvalidOptions(_))
    ));
    let bad_url = SendOptions {
        base_url: "127.0.0.1:8080".into(),
        ..opts("")
    };
    assert!(matches!(
        send(messages(1), &bad_url).await,
        Err(SendError::InvalidOptions(_))
    ));
}
