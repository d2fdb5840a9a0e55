-- Question: when did an export last succeed, how many did not, and how many runs have not been refreshed lately?
-- Only a 'succeeded' batch is a success: 'partial' ones (some runs failed, the rest landed)
-- are counted apart, and so are 'interrupted', 'auth_failed', 'run_list_failed' and 'failed' ones.
SELECT
    (SELECT MAX(finished_at) FROM {{batches}}
     WHERE table_name = {{table_name}} AND status = {{batch_succeeded}})
        AS last_successful_export,
    (SELECT COUNT(*) FROM {{batches}}
     WHERE table_name = {{table_name}} AND status = {{batch_partial}})
        AS partial_exports,
    (SELECT COUNT(*) FROM {{batches}}
     WHERE table_name = {{table_name}} AND status NOT IN ({{batch_succeeded}}, {{batch_partial}}, {{batch_running}}))
        AS unsuccessful_exports,
    (SELECT COUNT(*) FROM {{runs}}) AS runs,
    (SELECT COUNT(*) FROM {{runs}} WHERE fetched_at < {{days_ago(1)}}) AS not_refreshed_1d,
    (SELECT COUNT(*) FROM {{runs}} WHERE fetched_at < {{days_ago(7)}}) AS not_refreshed_7d,
    (SELECT COUNT(*) FROM {{runs}} WHERE fetched_at < {{days_ago(30)}}) AS not_refreshed_30d
