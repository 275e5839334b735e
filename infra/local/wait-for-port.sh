# Sourced by the local scripts: `wait_for_port PORT [PID]` returns once something listens on
# 127.0.0.1:PORT, or fails after WAIT_FOR_PORT_SECS (ten by default), or as soon as process
# PID (the one meant to listen) has exited.
wait_for_port() {
  local tries=$((${WAIT_FOR_PORT_SECS:-10} * 10))
  for _ in $(seq 1 "$tries"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
      echo "the process meant to listen on port $1 exited" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}
