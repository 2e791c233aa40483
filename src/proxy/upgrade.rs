//! HTTP/1.1 `Upgrade` (WebSocket) pass-through: once both sides have switched protocols the
//! proxy copies bytes both ways until either closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Joins the client's and the upstream's upgraded connections in a background task.
pub fn tunnel(client: OnUpgrade, upstream: OnUpgrade, request_id: String) {
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client, upstream);
        match (client, upstream) {
            (Ok(client), Ok(upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => tracing::debug!(
                        request_id,
                        bytes_to_upstream = up,
                        bytes_to_client = down,
                        "upgraded connection closed"
                    ),
                    Err(e) => {
                        tracing::debug!(request_id, error = %e, "upgraded connection ended with an error")
                    }
                }
            }
            _ => tracing::debug!(request_id, "upgrade did not complete on both sides"),
        }
    });
}
