/* Fixed PEM material for the configuration tests, generated once with openssl:
 *   openssl ecparam -name prime256v1 -genkey | openssl pkcs8 -topk8 -nocrypt   (OTHER_KEY_PEM)
 *   openssl ecparam -name prime256v1 -genkey | openssl pkcs8 -topk8 -nocrypt   (UNRELATED_KEY_PEM)
 *   openssl req -x509 -key UNRELATED_KEY_PEM -days 36500 -subj /CN=unrelated.example
 *       -addext subjectAltName=DNS:unrelated.example -addext basicConstraints=critical,CA:FALSE
 *       -addext keyUsage=critical,digitalSignature -addext extendedKeyUsage=serverAuth
 * OTHER_KEY_PEM belongs to no certificate here; UNRELATED_KEY_PEM is the key of
 * UNRELATED_CERT_PEM (CN and SAN unrelated.example). */
#ifndef MAILTLS_TEST_KEYS_H
#define MAILTLS_TEST_KEYS_H

static const char OTHER_KEY_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgDK5ZzCYfzeNIcN7c\n"
    "5M1RpZn4atHtyRW3qM2NbFoMSl2hRANCAAQ5b6PlAUO2SwTyVN1M258YIbCJD/PJ\n"
    "VzUfh7YoSpXAWRT6QqCzrVW74FTPbSJE0NlDlpNmSZJJCpMLrhCJqzfK\n"
    "-----END PRIVATE KEY-----\n";

static const char UNRELATED_CERT_PEM[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIB0TCCAXegAwIBAgIUVfmFlElyyOUeTqaiKtPlDjiiarswCgYIKoZIzj0EAwIw\n"
    "HDEaMBgGA1UEAwwRdW5yZWxhdGVkLmV4YW1wbGUwIBcNMjYxMTIzMDMzODAzWhgP\n"
    "MjEyNjEwMzAwMzM4MDNaMBwxGjAYBgNVBAMMEXVucmVsYXRlZC5leGFtcGxlMFkw\n"
    "EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEQAsgzNM7cE5fC5OS64ItTS3mm+9McXJw\n"
    "gGSucLx8U0yBJqmVcdILderlH0MupIHkHvSbKCOhi1Ny43GECkdEUqOBlDCBkTAd\n"
    "BgNVHQ4EFgQUcoSZ0YwgxEbEKr8lUpItv6HDs6YwHwYDVR0jBBgwFoAUcoSZ0Ywg\n"
    "xEbEKr8lUpItv6HDs6YwHAYDVR0RBBUwE4IRdW5yZWxhdGVkLmV4YW1wbGUwDAYD\n"
    "VR0TAQH/BAIwADAOBgNVHQ8BAf8EBAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEw\n"
    "CgYIKoZIzj0EAwIDSAAwRQIhAP3UW7W5Qyiy6lUG2XefKKLKJxrhuotg+SITQqPw\n"
    "gQlhAiBmA8iNzkmW8u+YDMPV1ZUzFR+ZFwx5NWTcZPlLtaIo0g==\n"
    "-----END CERTIFICATE-----\n";

static const char UNRELATED_KEY_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTHHkphDU+BoLdsfu\n"
    "/3Y6bXyI6En+yccs32ae3rb8chihRANCAARACyDM0ztwTl8Lk5Lrgi1NLeab70xx\n"
    "cnCAZK5wvHxTTIEmqZVx0gt16uUfQy6kgeQe9JsoI6GLU3LjcYQKR0RS\n"
    "-----END PRIVATE KEY-----\n";

#endif
