"""How every Kafka client of parity reaches the brokers: plain, or SASL (SCRAM or PLAIN) over TLS.

Two builders, one per client library, both from ``KafkaConfig``:

- ``librdkafka_config``: the confluent-kafka (librdkafka) settings of the producer,
  the offset checks and the admin client;
- ``flink_properties``: the ``properties.*`` options of the Flink job's Kafka tables
  (the Java client's names).

Callers add their own settings (group id, batching) to what these return and
never set a security setting themselves. Passwords stay in ``SecretStr`` until a
client is built; errors name the setting to fix and never carry a password.
The Flink options do carry it, inside ``sasl.jaas.config``: Flink masks keys
containing ``jaas.config`` or ``password`` wherever it prints table options
(``FactoryUtil.stringifyOption``) and the Kafka client logs it as ``[hidden]``,
but the DDL text itself must not be logged.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from parity.config import KafkaConfig
from parity.errors import ConfigError

# flink-sql-connector-kafka relocates the Kafka client under this prefix, and JAAS
# loads the login module by the name given, so the unrelocated name is not found.
_SHADED = "org.apache.flink.kafka.shaded."
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def sasl_password(cfg: KafkaConfig) -> str:
    """The SASL password, read from ``sasl_password_file`` now if that is where it is.

    Raises:
        ConfigError: no password is set, or its file cannot be read or is empty.
    """
    if cfg.sasl_password is not None:
        return cfg.sasl_password.get_secret_value()
    path = cfg.sasl_password_file
    if path is None:
        raise ConfigError("PARITY_KAFKA_SASL_PASSWORD (or PARITY_KAFKA_SASL_PASSWORD_FILE) is not set")
    try:
        # A file ends with a newline; a password never does.
        secret = path.read_text().removesuffix("\n")
    except OSError as exc:
        raise ConfigError(f"PARITY_KAFKA_SASL_PASSWORD_FILE: cannot read {path}: {exc.strerror}") from exc
    if not secret:
        raise ConfigError(f"PARITY_KAFKA_SASL_PASSWORD_FILE: {path} is empty")
    return secret


def librdkafka_config(cfg: KafkaConfig) -> dict[str, Any]:
    """confluent-kafka settings for ``cfg``: every Python client of the brokers starts from these.

    A refused login or TLS handshake raises ``ConfigError`` (``explain``'s text) from
    the client call that serves callbacks (``poll``, ``flush``, ``consume``), instead
    of librdkafka retrying it forever; other errors stay librdkafka's to retry.

    Raises:
        ConfigError: the password file cannot be read.
    """
    conf: dict[str, Any] = {"bootstrap.servers": cfg.bootstrap_servers}
    if cfg.security_protocol == "PLAINTEXT":
        return conf
    conf["security.protocol"] = cfg.security_protocol.lower()
    conf["error_cb"] = _RefusalCheck(cfg)
    if cfg.uses_sasl:
        conf["sasl.mechanism"] = cfg.sasl_mechanism
        conf["sasl.username"] = cfg.sasl_username
        conf["sasl.password"] = sasl_password(cfg)
    if cfg.uses_tls:
        # Without a CA file, librdkafka looks for the system's CAs in the usual places.
        conf["ssl.ca.location"] = str(cfg.ssl_ca_file) if cfg.ssl_ca_file is not None else "probe"
        conf["ssl.endpoint.identification.algorithm"] = "https"
        if cfg.ssl_cert_file is not None:
            conf["ssl.certificate.location"] = str(cfg.ssl_cert_file)
            conf["ssl.key.location"] = str(cfg.ssl_key_file or cfg.ssl_cert_file)
    return conf


def flink_properties(cfg: KafkaConfig) -> dict[str, str]:
    """The Flink Kafka connector's ``properties.*`` options for ``cfg`` (sources and sinks alike).

    TLS files become absolute paths, read by the task managers: they must exist at
    the same place on every machine that runs the job.

    Raises:
        ConfigError: the password file cannot be read, or a client key sits in its own
            file (the Java client takes the key and the certificate from one PEM file).
    """
    props = {"properties.bootstrap.servers": cfg.bootstrap_servers}
    if cfg.security_protocol == "PLAINTEXT":
        return props
    props["properties.security.protocol"] = cfg.security_protocol
    if cfg.uses_sasl:
        module = _SHADED + _LOGIN_MODULES[cfg.sasl_mechanism]
        user, password = _jaas_quoted(cfg.sasl_username or ""), _jaas_quoted(sasl_password(cfg))
        props["properties.sasl.mechanism"] = cfg.sasl_mechanism
        props["properties.sasl.jaas.config"] = f"{module} required username={user} password={password};"
    if cfg.ssl_ca_file is not None:
        props["properties.ssl.truststore.type"] = "PEM"
        props["properties.ssl.truststore.location"] = str(cfg.ssl_ca_file.resolve())
    if cfg.ssl_cert_file is not None:
        if cfg.ssl_key_file is not None and cfg.ssl_key_file.resolve() != cfg.ssl_cert_file.resolve():
            raise ConfigError(
                "PARITY_KAFKA_SSL_KEY_FILE: the Flink job's Kafka client reads the key from the "
                "certificate's file; put the key into PARITY_KAFKA_SSL_CERT_FILE and unset it"
            )
        props["properties.ssl.keystore.type"] = "PEM"
        props["properties.ssl.keystore.location"] = str(cfg.ssl_cert_file.resolve())
    return props


def explain(cfg: KafkaConfig, error: KafkaError) -> str:
    """A librdkafka error's text; for a refused login, TLS handshake or connection, the settings to check."""
    text, code, servers = error.str().rstrip("."), error.code(), cfg.bootstrap_servers
    if code == KafkaError._AUTHENTICATION:
        if not cfg.uses_sasl:
            return f"{text}: Kafka at {servers} wants a login; set PARITY_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
        return (
            f"Kafka refused the SASL login of user {cfg.sasl_username!r} ({cfg.sasl_mechanism}); check "
            "PARITY_KAFKA_SASL_USERNAME / PARITY_KAFKA_SASL_PASSWORD (or PARITY_KAFKA_SASL_PASSWORD_FILE) "
            f"and PARITY_KAFKA_SASL_MECHANISM. Kafka said: {text}"
        )
    if code == KafkaError._SSL:
        return (
            f"the TLS handshake with Kafka at {servers} failed; check PARITY_KAFKA_SSL_CA_FILE (the CA "
            "that signed the brokers' certificates, which must name the host in "
            f"PARITY_KAFKA_BOOTSTRAP_SERVERS) and PARITY_KAFKA_SSL_CERT_FILE if the brokers ask for one. "
            f"librdkafka said: {text}"
        )
    if code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT) and not cfg.uses_tls:
        return (
            f"{text}; if Kafka at {servers} takes TLS connections only, set "
            "PARITY_KAFKA_SECURITY_PROTOCOL to SASL_SSL or SSL, and PARITY_KAFKA_SSL_CA_FILE"
        )
    return text


def _jaas_quoted(value: str) -> str:
    """``value`` as a JAAS option value: double quotes, with backslash escapes."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class _RefusalCheck:
    """librdkafka's ``error_cb``: a refused login or TLS handshake raises, anything else is retried."""

    def __init__(self, cfg: KafkaConfig) -> None:
        self._cfg = cfg

    def __call__(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            raise ConfigError(explain(self._cfg, error))
