//! Concurrency per integrator: one semaphore each, so a tenant flooding the server is answered
//! 429 while the others keep their share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// Per-integrator request slots.
pub struct Limits {
    per_integrator: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Limits {
    pub fn new(per_integrator: usize) -> Limits {
        Limits { per_integrator, slots: Mutex::new(HashMap::new()) }
    }

    /// A slot for one request of `integrator`, held until dropped; none left → [`ApiError::Busy`].
    pub fn try_acquire(&self, integrator: &str) -> Result<OwnedSemaphorePermit, ApiError> {
        let sem = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(integrator.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_integrator))).clone()
        };
        sem.try_acquire_owned().map_err(|_| ApiError::Busy(integrator.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_integrator_has_its_own_slots() {
        let l = Limits::new(1);
        let a = l.try_acquire("a").expect("first slot");
        assert!(matches!(l.try_acquire("a"), Err(ApiError::Busy(_))));
        assert!(l.try_acquire("b").is_ok(), "b is not limited by a");
        drop(a);
        assert!(l.try_acquire("a").is_ok());
    }
}
