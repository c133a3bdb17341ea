//! Statements with a variable `IN (…)` list.
//!
//! sqlx prepares each distinct SQL text once per connection and keeps it in
//! a small cache. An `IN` list of one placeholder per value makes a new text
//! for every list length: under load (the token batches of `auth::tokens`
//! hold 1 to 256 ids) the cache would evict and re-prepare all the time, one
//! extra round trip and server-side work per statement. Lists are therefore
//! padded to the next power of two by repeating their last value, which
//! changes no result (`IN` ignores duplicates), so at most nine texts cover
//! lists of up to 256 values.

/// `?,?,…` for `values` padded as described above, and the padded values to bind.
pub fn in_list<T: Copy>(values: &[T]) -> (String, Vec<T>) {
    let Some(&last) = values.last() else {
        return (String::new(), Vec::new());
    };
    let len = values.len().next_power_of_two();
    let mut padded = Vec::with_capacity(len);
    padded.extend_from_slice(values);
    padded.resize(len, last);
    (vec!["?"; len].join(","), padded)
}

#[cfg(test)]
mod tests {
    use super::in_list;

    #[test]
    fn pads_to_powers_of_two_with_the_last_value() {
        assert_eq!(in_list::<u64>(&[]), (String::new(), vec![]));
        assert_eq!(in_list(&[7]), ("?".into(), vec![7]));
        assert_eq!(in_list(&[7, 8]), ("?,?".into(), vec![7, 8]));
        assert_eq!(in_list(&[7, 8, 9]), ("?,?,?,?".into(), vec![7, 8, 9, 9]));
        let (sql, values) = in_list(&(1..=129).collect::<Vec<u64>>());
        assert_eq!((sql.matches('?').count(), values.len()), (256, 256));
        assert_eq!(values[128..], [129; 128]);
    }

    #[test]
    fn few_distinct_texts() {
        let texts: std::collections::HashSet<String> = (1..=256u64)
            .map(|n| in_list(&vec![1; n as usize]).0)
            .collect();
        assert_eq!(texts.len(), 9);
    }
}
