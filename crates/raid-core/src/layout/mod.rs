//! Stripe geometry (in progress).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {}

#[derive(Debug, Clone)]
pub struct Geometry;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {}
