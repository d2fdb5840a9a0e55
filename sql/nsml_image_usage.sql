-- Question: which container images are used, BASE or CUSTOM, and how often?
SELECT image_type, image_path, COUNT(*) AS runs, COUNT(DISTINCT project_id) AS projects,
       COUNT(DISTINCT creator) AS creators
FROM {{runs}}
GROUP BY image_type, image_path
