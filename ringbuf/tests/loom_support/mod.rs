//! What the loom test files share.

/// Explore `f` with the preemption bound from `LOOM_MAX_PREEMPTIONS`, or 2
/// if unset (unbounded exploration of these models would not finish).
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(f);
}
