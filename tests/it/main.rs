//! Integration tests: the real binary, the bundled model, real HTTP.
//!
//! One test binary (so it links once); each test starts its own server on a free port, so they
//! run in parallel and none depends on another's state.

mod calibration;
mod contract;
mod demo;
mod determinism;
mod errors;
mod files;
mod fuzz;
mod graph_capture;
mod hostile_clients;
mod hostile_registry;
mod layering;
mod multi_label;
mod operations;
mod overload;
mod parity;
mod predict;
mod protocols;
mod shadow;
mod startup;
mod support;
mod variants;
