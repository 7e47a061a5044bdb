"""A practice Kubernetes cluster that the official client and real kubectl both accept.

Public interface: `sandbox.server.Sandbox` (start/stop/store/wait_for),
`sandbox.kubeconfig.write_kubeconfig`, `sandbox.cli.main` (`python -m sandbox`,
`interlock sandbox`), `sandbox.testing.running_sandbox`. See README.md beside this file."""
