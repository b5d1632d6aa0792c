//! A small cache of values derived from names (topic, service, method), for hot paths that
//! would otherwise validate, format or build the same value on every call.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Values computed once per name and shared (`Arc`). Bounded: past `capacity` names it starts
/// over, so a caller that sees ever new names (one topic per customer, say) cannot make it
/// grow without limit.
///
/// ```
/// use tributary_core::cache::NameCache;
///
/// let cache: NameCache<String> = NameCache::new(16);
/// let a = cache.get_or_try_insert("orders", |name| Ok::<_, ()>(format!("ns:{{{name}}}"))).unwrap();
/// let b = cache.get_or_try_insert("orders", |_| Err(())).unwrap(); // not computed again
/// assert!(std::sync::Arc::ptr_eq(&a, &b));
/// ```
#[derive(Debug)]
pub struct NameCache<V> {
    values: RwLock<HashMap<String, Arc<V>>>,
    capacity: usize,
}

impl<V> NameCache<V> {
    /// An empty cache that holds at most `capacity` names.
    pub fn new(capacity: usize) -> Self {
        Self { values: RwLock::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// The value for `name`, computed by `make` the first time.
    pub fn get_or_insert_with(&self, name: &str, make: impl FnOnce(&str) -> V) -> Arc<V> {
        match self.get_or_try_insert(name, |n| Ok::<_, std::convert::Infallible>(make(n))) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// The value for `name`, computed by `make` the first time (an error is returned and not
    /// cached).
    ///
    /// # Errors
    /// What `make` returns.
    pub fn get_or_try_insert<E>(&self, name: &str, make: impl FnOnce(&str) -> Result<V, E>) -> Result<Arc<V>, E> {
        if let Some(v) = self.values.read().expect("name cache lock").get(name) {
            return Ok(v.clone());
        }
        let value = Arc::new(make(name)?);
        let mut values = self.values.write().expect("name cache lock");
        if values.len() >= self.capacity {
            values.clear();
        }
        values.insert(name.to_owned(), value.clone());
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_computed_once_and_the_cache_stays_bounded() {
        let cache = NameCache::new(2);
        let mut made = 0;
        for name in ["a", "a", "b", "a"] {
            cache
                .get_or_try_insert(name, |n| {
                    made += 1;
                    Ok::<_, ()>(n.len())
                })
                .unwrap();
        }
        assert_eq!(made, 2);
        cache.get_or_try_insert("c", |_| Ok::<_, ()>(0)).unwrap(); // full: starts over
        assert_eq!(cache.values.read().unwrap().len(), 1);
        assert!(cache.get_or_try_insert("d", |_| Err::<usize, _>("bad")).is_err());
        assert!(!cache.values.read().unwrap().contains_key("d"), "errors are not cached");
    }
}
