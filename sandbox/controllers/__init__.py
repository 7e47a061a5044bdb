"""What makes stored objects behave like a cluster: the control loops (core.py: Deployments,
ReplicaSets, pods, endpoints, and the shared queue; workloads.py: StatefulSets, DaemonSets,
PDBs; batch.py: Jobs, CronJobs; autoscaling.py: HPAs), a pretend kubelet, the logs and metrics
it reports, and the Events they record."""
