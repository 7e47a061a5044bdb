"""What makes stored objects behave like a cluster: the control loops (core.py: the shared queue,
namespaces and pods; rollouts.py: Deployments and ReplicaSets; endpoints.py: a Service's
endpoints; workloads.py: StatefulSets, DaemonSets, PDBs; batch.py: Jobs and CronJobs;
autoscaling.py: HPAs), a pretend kubelet and the Events it records (kubelet.py, podevents.py),
the logs and metrics it reports, and the Events the controllers record."""
