//! A test that runs a service with signal handling off.

use mamey_core::{BoxError, Service};

use crate::getting_started::{Greeter, SayHello};

// ANCHOR: signals_test
#[tokio::test]
async fn greets_and_stops() -> Result<(), BoxError> {
    let service = Service::builder("hello-test")
        .handle_signals(false)
        .env_vars([("MAMEY__GREETER__GREETING", "Hi")]) // not the process environment
        .plugin(Greeter)
        .build()
        .await?;
    service
        .dispatcher()
        .send(SayHello {
            name: "test".into(),
        })
        .await?;

    service.shutdown_handle().shutdown(); // run() starts no plug-in, stops every one, returns Ok
    service.run().await?;
    Ok(())
}
// ANCHOR_END: signals_test
