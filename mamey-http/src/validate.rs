//! Request validation with garde rules (feature `garde`).

use mamey_core::Error;

/// Checks `value` against its garde rules: `Ok`, or an `invalid_input`
/// error with code `request.invalid` and one field error per failed rule,
/// which the web API answers with `422` listing the fields.
///
/// Call it from the message's `validate`, so the dispatcher's validation
/// middleware runs it for every transport:
///
/// ```
/// use mamey_core::cqrs::Command;
///
/// #[derive(garde::Validate)]
/// struct PlaceOrder {
///     #[garde(length(min = 1))]
///     customer: String,
///     #[garde(range(min = 1, max = 100))]
///     quantity: u32,
/// }
///
/// impl Command for PlaceOrder {
///     fn validate(&self) -> Result<(), mamey_core::Error> {
///         mamey_http::validate(self)
///     }
/// }
///
/// let error = PlaceOrder { customer: String::new(), quantity: 0 }.validate().unwrap_err();
/// assert_eq!(error.fields().len(), 2);
/// ```
///
/// # Errors
/// The rules that failed, as field errors.
pub fn validate<T>(value: &T) -> Result<(), Error>
where
    T: garde::Validate + ?Sized,
    T::Context: Default,
{
    let Err(report) = value.validate() else {
        return Ok(());
    };
    let mut error = Error::invalid_input("request.invalid", "the input breaks its rules");
    for (path, failure) in report.iter() {
        let field = path.to_string();
        error = error.with_field(field, "invalid", failure.message());
    }
    Err(error)
}
