-- Question: how do nodes end: for each exit code, how many nodes and runs ended with it, and how often did such a run fail?
-- From each run's last stored node list (nsml_run_nodes, export --nodes): one row per exit code
-- as the API gives it (raw: what a code means is not documented); NULL gathers the nodes that
-- have none (still running, or never started). nodes: nodes with that code; node_share: their
-- share of all nodes with an exit code (NULL for the NULL row); runs: runs with at least one
-- such node; failed_runs: those of them that ended RUN_STATE_FAILED; failure_rate: failed_runs
-- / runs. Shares to four decimals.
SELECT k.exit_code, SUM(k.nodes) AS nodes,
       CASE WHEN k.exit_code IS NULL THEN NULL
            ELSE ROUND(1.0 * SUM(k.nodes) / (
                SELECT COUNT(*) FROM {{nodes}} a
                JOIN {{runs}} ar ON ar.project_id = a.project_id AND ar.run_name = a.run_name
                WHERE a.exit_code IS NOT NULL), 4)
       END AS node_share,
       COUNT(*) AS runs, SUM(k.failed) AS failed_runs,
       ROUND(1.0 * SUM(k.failed) / COUNT(*), 4) AS failure_rate
FROM (
    -- each run once per exit code of its nodes
    SELECT n.exit_code, n.project_id, n.run_name, COUNT(*) AS nodes,
           MAX(CASE WHEN r.status = {{run_failed}} THEN 1 ELSE 0 END) AS failed
    FROM {{nodes}} n
    JOIN {{runs}} r ON r.project_id = n.project_id AND r.run_name = n.run_name
    GROUP BY n.exit_code, n.project_id, n.run_name
) k
GROUP BY k.exit_code
