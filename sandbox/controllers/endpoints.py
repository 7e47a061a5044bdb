"""The endpoints controller, registered on the shared `Controllers` queue: a Service's
Endpoints and EndpointSlice follow the ready pods its selector matches."""

from __future__ import annotations

from sandbox.controllers.core import (
    ENDPOINTS,
    NODES,
    PODS,
    SERVICES,
    SLICE_MANAGER,
    SLICES,
    Controllers,
    _is_ready,
    owner_ref,
    template_hash,
)
from sandbox.state.selectors import Requirement, labels_match
from sandbox.state.store import Obj


class Endpoints:
    def __init__(self, ctl: Controllers) -> None:
        self.ctl = ctl
        self.store = ctl.store
        ctl._reconcilers["Service"] = self._endpoints

    # ---- endpoints -----------------------------------------------------------------------
    def _endpoints(self, ns: str, name: str) -> None:
        svc = self.store.get(SERVICES, ns, name)
        slice_name = f"{name}-{template_hash({'service': f'{ns}/{name}'})[:5]}"
        if svc is None:
            if self.store.get(ENDPOINTS, ns, name) is not None:
                self.store.delete(ENDPOINTS, ns, name)
            if self.store.get(SLICES, ns, slice_name) is not None:
                self.store.delete(SLICES, ns, slice_name)
            return
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            return
        reqs: list[Requirement] = [(k, "=", (str(v),)) for k, v in selector.items()]
        ready: list[Obj] = []
        not_ready: list[Obj] = []
        pods = [
            p
            for p in self.store.list(PODS, ns)
            if labels_match(reqs, p["metadata"].get("labels"))
            and (p.get("status") or {}).get("podIP")
        ]
        for p in pods:
            addr = {
                "ip": p["status"]["podIP"],
                "nodeName": p["spec"].get("nodeName"),
                "targetRef": {
                    "kind": "Pod",
                    "namespace": ns,
                    "name": p["metadata"]["name"],
                    "uid": p["metadata"]["uid"],
                },
            }
            (ready if _is_ready(p) else not_ready).append(addr)
        ports = []
        for port in svc["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, str):
                target = next(
                    (
                        cp["containerPort"]
                        for p in pods
                        for c in p["spec"].get("containers") or []
                        for cp in c.get("ports") or []
                        if cp.get("name") == target
                    ),
                    port.get("port"),
                )
            entry = {"port": target, "protocol": port.get("protocol", "TCP")}
            if port.get("name"):
                entry["name"] = port["name"]
            ports.append(entry)
        subset: Obj = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if subset:
            subset["ports"] = ports
        ep = self.store.get(ENDPOINTS, ns, name)
        subsets = [subset] if subset else []
        if ep is None:
            self.store.create(
                ENDPOINTS,
                {
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "labels": dict(svc["metadata"].get("labels") or {}),
                        "creationTimestamp": svc["metadata"]["creationTimestamp"],
                    },
                    "subsets": subsets,
                },
            )
        elif ep.get("subsets", []) != subsets:
            ep["subsets"] = subsets
            self.ctl._write(ENDPOINTS, ep)
        self._endpoint_slice(svc, slice_name, ready, not_ready, ports)

    def _endpoint_slice(
        self, svc: Obj, slice_name: str, ready: list[Obj], not_ready: list[Obj], ports: list[Obj]
    ) -> None:
        """The discovery.k8s.io/v1 view of the same endpoints: describe svc/ingress read it."""
        ns = svc["metadata"]["namespace"]

        def endpoint(addr: Obj, ok: bool) -> Obj:
            node = self.store.get(NODES, "", addr.get("nodeName") or "")
            zone = ((node or {}).get("metadata", {}).get("labels") or {}).get(
                "topology.kubernetes.io/zone"
            )
            out: Obj = {
                "addresses": [addr["ip"]],
                "conditions": {"ready": ok, "serving": ok, "terminating": False},
                "nodeName": addr.get("nodeName"),
                "targetRef": addr["targetRef"],
            }
            if zone:
                out["zone"] = zone
            return out

        endpoints = [endpoint(a, True) for a in ready] + [endpoint(a, False) for a in not_ready]
        current = self.store.get(SLICES, ns, slice_name)
        if current is None:
            self.store.create(
                SLICES,
                {
                    "metadata": {
                        "name": slice_name,
                        "namespace": ns,
                        "generateName": f"{svc['metadata']['name']}-",
                        "labels": {
                            "kubernetes.io/service-name": svc["metadata"]["name"],
                            "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
                        },
                        "ownerReferences": [owner_ref(svc)],
                        "creationTimestamp": svc["metadata"]["creationTimestamp"],
                    },
                    "addressType": "IPv4",
                    "endpoints": endpoints,
                    "ports": ports,
                },
            )
        elif (current.get("endpoints"), current.get("ports")) != (endpoints, ports):
            current["endpoints"], current["ports"] = endpoints, ports
            self.ctl._write(SLICES, current)
