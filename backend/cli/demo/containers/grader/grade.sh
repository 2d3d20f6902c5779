#!/bin/sh
# Grader of the exercise "print the sum of two numbers", for docker-job-manager.
#
# stdin: one JSON line, {"input": {"code": "...", "a": 2, "b": 3}, "limits": {...}, "job_id": "..."}
# The submission, "code", is a shell snippet run as `sh -c "$code" sh "$a" "$b"`; it must print
# a + b. (This simple sed-based reader wants no double quote or backslash in "code".)
# stdout: one JSON object, {"result": "success" | "failed", "text": "..."}
read -r line
code=$(printf '%s\n' "$line" | sed -n 's/.*"code": *"\([^"]*\)".*/\1/p')
a=$(printf '%s\n' "$line" | sed -n 's/.*"a": *\(-\{0,1\}[0-9][0-9]*\).*/\1/p')
b=$(printf '%s\n' "$line" | sed -n 's/.*"b": *\(-\{0,1\}[0-9][0-9]*\).*/\1/p')
if [ -z "$code" ] || [ -z "$a" ] || [ -z "$b" ]; then
    echo '{"result": "failed", "text": "The input needs \"code\", \"a\" and \"b\"."}'
    exit 0
fi
expected=$((a + b))
# the submission's stderr goes to the container's stderr (it counts in the output limit)
got=$(sh -c "$code" sh "$a" "$b" < /dev/null)
status=$?
if [ "$status" -gt 128 ]; then
    # the submission was killed by a signal (SIGXCPU: its CPU time limit): the grader dies of
    # the same signal, so that the job's result says why (timeout, reason cpu_time)
    kill -"$((status - 128))" $$
    exit "$status"
fi
# keep the text JSON-safe: no quote, backslash or control character, 200 bytes at most
shown=$(printf '%s' "$got" | tr -d '"\\' | tr '\n\t\r' '   ' | head -c 200)
if [ "$got" = "$expected" ]; then
    printf '{"result": "success", "text": "%s + %s = %s: right."}\n' "$a" "$b" "$expected"
else
    printf '{"result": "failed", "text": "%s + %s: expected %s, got \\"%s\\"."}\n' \
        "$a" "$b" "$expected" "$shown"
fi
