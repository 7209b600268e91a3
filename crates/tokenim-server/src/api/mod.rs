//! The adapters between the network and the services: the HTTP JSON API
//! (`http`), the WebSocket gateway (`ws`) and the embedded web client
//! (`web`). They parse and bound input, call one service each, and map
//! errors through the one code→status table of `tokenim-proto`.

pub mod http;
pub mod web;
pub mod ws;
