//! Log set-up for the two ways the handler runs. Neither ever logs the ResponseURL.

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn"))
}

/// Lambda: one JSON object per line, which CloudWatch Logs Insights can query by field.
pub fn init_lambda() {
    tracing::subscriber::set_global_default(lambda_subscriber(std::io::stdout))
        .expect("logging is set up once");
}

/// What Lambda logs, written to `writer` (the tests capture it to look for secrets).
pub fn lambda_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .with_writer(writer)
        .finish()
}

/// The command line: short human-readable progress on stderr, so stdout holds only the response.
pub fn init_cli() {
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .compact()
        .init();
}
