-- Question: which GPU servers do runs use, and how many are busy right now?
-- nodes and active_nodes count each run's nodes (its last node list, export --nodes; 1 without
-- one), so a distributed run on four nodes is four busy servers.
SELECT eng_full_name, gpu_svr_code, COUNT(*) AS runs,
       SUM(CASE WHEN (status IS NULL OR status NOT IN ({{terminal_statuses}}))
                AND gone_at IS NULL THEN 1 ELSE 0 END)
           AS active_runs,
       SUM(nodes) AS nodes,
       SUM(CASE WHEN (status IS NULL OR status NOT IN ({{terminal_statuses}}))
                AND gone_at IS NULL THEN nodes ELSE 0 END)
           AS active_nodes
FROM (
    SELECT r.eng_full_name, r.gpu_svr_code, r.status, r.gone_at,
           (SELECT CASE WHEN COUNT(*) > 0 THEN COUNT(*) ELSE 1 END FROM {{nodes}} n
            WHERE n.project_id = r.project_id AND n.run_name = r.run_name) AS nodes
    FROM {{runs}} r
) u
GROUP BY eng_full_name, gpu_svr_code
