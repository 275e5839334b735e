# Sourced by the local scripts: `wait_for_port PORT` returns once something listens on
# 127.0.0.1:PORT, or fails after ten seconds.
wait_for_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}
