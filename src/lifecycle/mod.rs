//! A model's life: [`source`] finds versions (a directory or an MLflow registry) and fetches them
//! into a cache; [`reload`] loads a new version beside the served one and swaps it in (the
//! champion) or runs it as the shadow challenger.

pub mod reload;
pub mod source;
