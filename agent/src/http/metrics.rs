//! `/metrics`: the latest state the event loop published, rendered per
//! scrape on the blocking pool so the loop's thread only hands over an Arc.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};

use crate::metrics::{
    families::{render, CONTENT_TYPE},
    process::Process,
    MetricsHandle,
};

pub async fn scrape(State(handle): State<MetricsHandle>) -> Response {
    let state = handle.latest();
    match tokio::task::spawn_blocking(move || render(state, Process::read())).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => {
            log::error!("cannot render metrics: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
        }
        Err(e) => {
            log::error!("metrics rendering stopped: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
        }
    }
}
