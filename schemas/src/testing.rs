//! Helpers for tests of the wire format, in this crate and in the crates that consume it
//! (feature `testing`, for their dev-dependencies only).
#![allow(deprecated)] // `to_avro_datum`: the plainest way to write one datum here.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts a schema registry on a free loopback port that answers its first request with
/// `first` (a status line and a JSON body) and every later one with the newest schema of
/// `event_type`; its base URL.
pub async fn registry_answering_first(
    first: (&'static str, &'static str),
    event_type: &str,
) -> String {
    let schema = crate::latest(event_type).expect("a known event type");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let found = serde_json::json!({ "schema": schema.file.text }).to_string();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => request.extend_from_slice(&buffer[..read]),
                }
            }
            let (status, body) = match n {
                0 => first,
                _ => ("200 OK", found.as_str()),
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    url
}

/// `payload`, an event of `event_type`, written with its newest schema in the Confluent wire
/// format, naming schema id `id`.
pub fn framed(event_type: &str, payload: &serde_json::Value, id: u32) -> Vec<u8> {
    let schema = crate::latest(event_type).expect("a known event type");
    let value = crate::convert::json_to_avro(payload, &schema.schema).expect("a fitting payload");
    let datum = apache_avro::to_avro_datum(&schema.schema, value).expect("an encodable datum");
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&datum);
    bytes
}
