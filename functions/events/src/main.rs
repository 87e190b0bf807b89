//! The events Lambda function: wiring only; everything else lives in the shared crate.

fn main() -> Result<(), lambda_http::Error> {
    keygate::lambda::events_main()
}
