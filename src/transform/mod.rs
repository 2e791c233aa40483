//! JSON field transforms (in progress).
