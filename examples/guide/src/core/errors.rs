//! Errors.

// ANCHOR: errors
use mamey_core::Error;

/// One error of each sort.
pub fn examples(
    id: u64,
    io_error: std::io::Error,
    parse_error: std::num::ParseIntError,
) -> [Error; 4] {
    let missing = Error::not_found("order.not_found", format!("order {id} does not exist"));

    let invalid = Error::invalid_input("order.invalid", "the order is not valid").with_field(
        "items[0].quantity",
        "range",
        "must be between 1 and 100",
    );

    // A dependency failed in a way the caller can retry:
    let down =
        Error::unavailable("orders.store", "the order store is unreachable").with_source(io_error);

    // Anything unexpected: Internal, with the original kept as the source.
    let bug = Error::from_source(parse_error);

    [missing, invalid, down, bug]
}
// ANCHOR_END: errors

#[cfg(test)]
mod tests {
    use mamey_core::ErrorKind;

    use super::examples;

    #[test]
    fn kinds_codes_and_display() {
        let io_error = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let Err(parse_error) = "x".parse::<u64>() else {
            panic!("`x` parsed as a number");
        };
        let [missing, invalid, down, bug] = examples(7, io_error, parse_error);
        assert_eq!(
            missing.to_string(),
            "not_found (order.not_found): order 7 does not exist"
        );
        assert_eq!(invalid.kind(), ErrorKind::InvalidInput);
        assert!(
            invalid
                .to_string()
                .ends_with("; items[0].quantity: must be between 1 and 100"),
            "{invalid}"
        );
        assert!(down.kind().is_retryable());
        assert_eq!(bug.kind(), ErrorKind::Internal);
        assert_eq!(bug.code(), "internal");
        assert_eq!(bug.public_message(), "an internal error occurred");
    }
}
