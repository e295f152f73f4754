# Stand-in for rust:1.95-slim-bookworm where Docker Hub cannot be reached (made by
# scripts/base-images.sh; a user who can pull gets the real image): the build machine's own Rust
# toolchain (bin/ and lib/ of the rustup toolchain, copied into the build context) on Debian
# bookworm with the C compiler the official slim image has.
FROM debian:bookworm-slim
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      ca-certificates gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY toolchain /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN rustc --version && cargo --version
