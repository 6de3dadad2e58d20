pub mod config;
pub mod media;
pub mod fmp4;
pub mod hub;
pub mod source;
