pub mod config;
pub mod media;
