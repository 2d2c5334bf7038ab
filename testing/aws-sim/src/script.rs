//! The call log and scripted faults of an in-memory fake (the controllers' reconcile-level tests): every call is
//! recorded by operation name, and the next calls of an operation can be made to fail with a given error.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

type Inner<E> = (Vec<&'static str>, HashMap<&'static str, VecDeque<E>>);

/// Calls made and faults waiting, per operation.
#[derive(Debug)]
pub struct Script<E> {
    inner: Mutex<Inner<E>>,
}

impl<E> Default for Script<E> {
    fn default() -> Self {
        Self {
            inner: Mutex::new((Vec::new(), HashMap::new())),
        }
    }
}

impl<E: Clone> Script<E> {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner<E>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a call of `operation`; `Err` with the next fault scripted for it, if any.
    pub fn enter(&self, operation: &'static str) -> Result<(), E> {
        let mut inner = self.inner();
        inner.0.push(operation);
        match inner.1.get_mut(operation).and_then(VecDeque::pop_front) {
            Some(fault) => Err(fault),
            None => Ok(()),
        }
    }

    /// The next `times` calls of `operation` fail with `error`.
    pub fn fail(&self, operation: &'static str, error: E, times: usize) {
        self.inner()
            .1
            .entry(operation)
            .or_default()
            .extend(std::iter::repeat_n(error, times));
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        self.inner().0.clone()
    }

    /// How many times `operation` was called.
    pub fn count(&self, operation: &str) -> usize {
        self.inner().0.iter().filter(|c| **c == operation).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_answered_in_order_then_calls_succeed_and_every_call_is_counted() {
        let script: Script<&str> = Script::default();
        script.fail("CreateTags", "throttled", 2);
        assert_eq!(script.enter("CreateTags"), Err("throttled"));
        assert_eq!(script.enter("DescribeImages"), Ok(()));
        assert_eq!(script.enter("CreateTags"), Err("throttled"));
        assert_eq!(script.enter("CreateTags"), Ok(()));
        assert_eq!(script.count("CreateTags"), 3);
        assert_eq!(
            script.calls(),
            ["CreateTags", "DescribeImages", "CreateTags", "CreateTags"]
        );
    }
}
