//! Managed MongoDB: the model's pure parts ([`replset`], the state machine behind
//! [`replset::MongoAdmin`]; [`storage`]; [`target`]), re-exported from `meteor_model::mongo`,
//! and [`driver`], [`replset::MongoAdmin`] on the official `mongodb` driver, which only the
//! operator links.

pub use meteor_model::mongo::{replset, storage, target};

pub mod driver;
