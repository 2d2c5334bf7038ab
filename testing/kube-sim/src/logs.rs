//! Container logs written by the Job executor and served at `pods/{name}/log` (with `follow` and `tailLines`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::sync::Notify;

/// Which container's log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogKey {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
}

#[derive(Debug, Default)]
struct Buffer {
    data: String,
    finished: bool,
}

/// All container logs.
#[derive(Clone, Debug, Default)]
pub struct Logs {
    inner: Arc<Mutex<HashMap<LogKey, Buffer>>>,
    notify: Arc<Notify>,
}

impl Logs {
    fn lock(&self) -> MutexGuard<'_, HashMap<LogKey, Buffer>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends output of a running container.
    pub fn append(&self, key: &LogKey, text: &str) {
        self.lock().entry(key.clone()).or_default().data.push_str(text);
        self.notify.notify_waiters();
    }

    /// Marks a container's log complete (the container exited).
    pub fn finish(&self, key: &LogKey) {
        self.lock().entry(key.clone()).or_default().finished = true;
        self.notify.notify_waiters();
    }

    /// The whole log (or its last `tail` lines) and the offset reached.
    pub fn snapshot(&self, key: &LogKey, tail: Option<usize>) -> (String, usize) {
        let logs = self.lock();
        let Some(buffer) = logs.get(key) else {
            return (String::new(), 0);
        };
        let text = match tail {
            Some(n) => {
                let lines: Vec<&str> = buffer.data.lines().collect();
                let start = lines.len().saturating_sub(n);
                let mut out = lines[start..].join("\n");
                if !out.is_empty() {
                    out.push('\n');
                }
                out
            }
            None => buffer.data.clone(),
        };
        (text, buffer.data.len())
    }

    /// Waits for output past `offset`; returns it, the new offset, and whether the log is complete.
    pub async fn read_from(&self, key: &LogKey, offset: usize) -> (String, usize, bool) {
        loop {
            let notified = self.notify.notified();
            {
                let logs = self.lock();
                match logs.get(key) {
                    Some(buffer) if buffer.data.len() > offset => {
                        return (buffer.data[offset..].to_owned(), buffer.data.len(), false);
                    }
                    Some(buffer) if !buffer.finished => {}
                    _ => return (String::new(), offset, true),
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
        }
    }

    /// Forgets every log of a pod (when the pod is deleted).
    pub fn remove_pod(&self, namespace: &str, pod: &str) {
        self.lock().retain(|k, _| !(k.namespace == namespace && k.pod == pod));
        self.notify.notify_waiters();
    }
}
