-- Question: which runs are still going (not completed, failed, stopped or canceled, nor deleted upstream)?
SELECT project_id, project_name, run_name, status, creator, eng_full_name, gpu_svr_code,
       image_path, create_time, update_time, fetched_at
FROM {{runs}}
WHERE (status IS NULL OR status NOT IN ({{terminal_statuses}})) AND gone_at IS NULL
