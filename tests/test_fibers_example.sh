#!/bin/sh
# test_fibers_example.sh - runs examples/fibers and checks its log on its
# own, not only the summary the program prints: every line's request id
# is the one its fiber was created with (the scheduler, not ctxvars, says
# which fiber ran), every fiber logged its five events with the stage its
# call tree had set, on both threads, and the summary agrees.
set -eu
out=${TMPDIR:-/tmp}/fibers-example.$$
trap 'rm -f "$out"' EXIT
./examples/fibers > "$out"
awk '
    /^summary:/ { summary = $0; next }
    {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        n = f["fiber"]
        want = sprintf("req-%05d", 7 * n + 3)
        if (f["req"] != want) { print "fiber " n " logged " f["req"]; bad++ }
        stage_of["accepted"] = "-"; stage_of["db-reply"] = "db"
        stage_of["parsed"] = "parse"; stage_of["committed"] = "commit"
        stage_of["done"] = "-"
        if (!(f["event"] in stage_of) || stage_of[f["event"]] != f["stage"]) {
            print "fiber " n ": event " f["event"] " in stage " f["stage"]; bad++
        }
        events[n]++
        seen[n, f["thread"]] = 1
        lines++
    }
    END {
        if (summary == "") { print "no summary line"; exit 1 }
        for (n = 0; n < 1000; n++) {
            if (events[n] != 5) { print "fiber " n ": " events[n] + 0 " events"; bad++ }
            if (!((n, 0) in seen) || !((n, 1) in seen)) {
                print "fiber " n " ran on one thread only"; bad++
            }
        }
        expect = "summary: fibers=1000 threads=2 lines=" lines \
                 " switches=4000 migrated=1000 mismatches=0 main=intact"
        if (summary != expect) { print "got:  " summary; print "want: " expect; bad++ }
        if (bad) exit 1
        print lines " lines checked; " summary
    }
' "$out"
