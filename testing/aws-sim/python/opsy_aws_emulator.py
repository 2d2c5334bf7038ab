"""AWS emulator for opsy-ami-operator tests: the moto server (pinned 5.2.5) plus what moto lacks.

Test infrastructure, not a product component. Started by the Rust helper in testing/aws-sim; prints
"READY <port>" on stdout once it serves on 127.0.0.1.

Added to moto:
- EKS UpdateNodegroupVersion, UpdateNodegroupConfig (asynchronous, tracked like a version update), DescribeUpdate
  (node group updates found only with their node group's name), ListUpdates; node groups with a launch template are backed by a real
  moto Auto Scaling group using that template (listed in the node group's resources).
- Auto Scaling StartInstanceRefresh, DescribeInstanceRefreshes, CancelInstanceRefresh, RollbackInstanceRefresh.
- EC2 CreateLaunchTemplateVersion honouring SourceVersion; DeleteLaunchTemplateVersions; EnableImageDeprecation and
  DisableImageDeprecation (DescribeImages shows DeprecationTime); DescribeImages applying Owners together with ImageIds.
- EC2 CopyImage: pending for a while, then available, or failed for the next copies a test asks to fail
  (/_ext/copy), ClientToken idempotency, TagSpecifications, CopyImageTags,
  Encrypted/KmsKeyId; DescribeImages of an account finds AMIs other accounts shared with it (launch permission for
  its account ID), without their tags.
- Progress of updates and refreshes with time: in "auto" mode each ends `durationSeconds` after it started (a ticker
  thread ends it; reads never change state; an instance refresh is Pending for the first tenth, then InProgress);
  in "manual" mode the test ends each (/_ext/eks/outcome, /_ext/autoscaling/outcome). Every update and refresh is
  recorded in a timeline (start and end times) so tests can check how many ran at once.
- Fault injection per service/action (HTTP status, error code, delay, count) and a log of calls per action.
- Seeding of public AMIs (owner, creation date, tags) and public SSM parameters.
- A resource's EC2 tags looked up in O(its tags) instead of O(all tags in the region) (same answer; switchable).

Assumptions tests depend on, where the AWS references are silent (each is also written beside its code):
- EKS: a node group update is refused (ResourceInUseException) while another runs or while the node group is
  CREATING, DELETING or *_FAILED; a DEGRADED node group accepts updates. DescribeUpdate of a node group update
  without (or with another) nodegroupName finds nothing (ResourceNotFoundException). After a failed version update
  the node group and its Auto Scaling group keep the old launch template version; the new updateConfig of a config
  update shows only after it succeeded. An update of a node group deleted meanwhile ends Cancelled.
- Auto Scaling: a refresh of a group deleted meanwhile ends Cancelled; with SkipMatching, a group that already
  launches from the desired template version has nothing to replace and the refresh ends at once (instances are not
  modelled one by one).
- EC2: refusing to delete a template's default version is reported with ResponseError code `unexpectedError`.
- EC2: launch permissions for organizations and OUs are stored and described, but membership is not modelled, so
  only an account-ID permission makes an AMI visible to another account. CopyImage with KmsKeyId needs Encrypted.
- EC2 (as AWS): an AMI's tags are visible only to the account that owns it; a seeded image owned by another account
  shows no tags and matches no tag filter. A child process signing with the access key `opsy<account>` works in that
  account.

Control API (JSON), all under /_ext/: see the handlers in `control()`.
It touches moto internals, so it refuses to run on another moto version.
"""

import argparse
import datetime
import io
import json
import os
import re
import sys
import threading
import time
import urllib.parse
import uuid

os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

import botocore.session  # noqa: E402
import moto  # noqa: E402
from importlib.metadata import version as package_version  # noqa: E402

PINNED_MOTO = "5.2.5"
if package_version("moto") != PINNED_MOTO:
    sys.exit(f"opsy_aws_emulator needs moto {PINNED_MOTO}, found {package_version('moto')}")

from moto.autoscaling.exceptions import AutoscalingClientError  # noqa: E402
from moto.autoscaling.models import autoscaling_backends  # noqa: E402
from moto.autoscaling.responses import AutoScalingResponse  # noqa: E402
from moto.core.responses import ActionResult  # noqa: E402
from moto.ec2.models import ec2_backends  # noqa: E402
from moto.ec2.models.amis import Ami  # noqa: E402
from moto.ec2.responses.launch_templates import LaunchTemplates  # noqa: E402
from moto.ec2.utils import random_ami_id  # noqa: E402
from moto.eks import urls as eks_urls  # noqa: E402
from moto.eks.exceptions import (  # noqa: E402
    InvalidParameterException,
    ResourceInUseException,
    ResourceNotFoundException,
)
from moto.eks.models import EKSBackend, eks_backends  # noqa: E402
from moto.eks.responses import EKSResponse  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.ssm.models import Parameter, ssm_backends  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

DEFAULT_ACCOUNT = "123456789012"
LOCK = threading.RLock()


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


class State:
    """Everything the extension keeps besides moto's own backends."""

    def __init__(self):
        self.faults = []
        self.calls = []
        self.mode = "auto"
        self.duration = 0.5  # seconds an update or instance refresh runs in "auto" mode
        self.timeline = []  # every update and refresh: {"kind", "account", "region", "name", "id", "start", "end"}
        self.updates = {}  # (account, region, cluster) -> {update_id: dict}
        self.refreshes = {}  # (account, region, asg) -> [dict], newest last
        self.outcomes = {}  # ("eks"|"asg", account, region, name) -> (status, code, message)
        self.copy_seconds = 2.0  # seconds a CopyImage copy stays pending in "auto" mode
        self.copy_tokens = {}  # (account, region, ClientToken) -> image id
        self.copies = []  # [(ami, due)] copies still pending
        self.copy_failures = 0  # the next this many copies end `failed` instead of `available`


STATE = State()


# --------------------------------------------------------------------------------------------------------------
# EKS: node groups backed by ASGs, UpdateNodegroupVersion, DescribeUpdate, ListUpdates
# --------------------------------------------------------------------------------------------------------------

_original_create_nodegroup = EKSBackend.create_nodegroup


def _create_nodegroup(self, *args, **kwargs):
    nodegroup = _original_create_nodegroup(self, *args, **kwargs)
    lt = nodegroup.launch_template
    if lt:
        ec2 = ec2_backends[self.account_id][self.region_name]
        template = ec2.get_launch_template(lt["id"]) if lt.get("id") else ec2.get_launch_template_by_name(lt["name"])
        version = str(lt.get("version") or template.default_version_number)
        nodegroup.launch_template = {"id": template.id, "name": template.name, "version": version}
        if not kwargs.get("instance_types"):
            # EKS API reference, Nodegroup.instanceTypes: "If the node group was deployed with a launch template,
            # then this is null" (the instance type comes from the template, or t3.medium). moto reports its default
            # ["t3.medium"] instead, which would hide the template's type. Assumption: a node group created with a
            # launch template and explicit instanceTypes reports them.
            nodegroup.instance_types = None
        scaling = nodegroup.scaling_config or {}
        asg_name = f"eks-{nodegroup.nodegroup_name}-{nodegroup.uuid[:8]}"
        autoscaling_backends[self.account_id][self.region_name].create_auto_scaling_group(
            name=asg_name,
            availability_zones=[f"{self.region_name}a"],
            desired_capacity=scaling.get("desiredSize", 1),
            max_size=scaling.get("maxSize", 1),
            min_size=scaling.get("minSize", 0),
            launch_config_name=None,
            launch_template={"LaunchTemplateId": template.id, "Version": version},
            vpc_zone_identifier=None,
            default_cooldown=None,
            health_check_period=None,
            health_check_type=None,
            load_balancers=[],
            target_group_arns=[],
            placement_group=None,
            termination_policies=[],
            tags=[
                {
                    "ResourceId": asg_name,
                    "ResourceType": "auto-scaling-group",
                    "Key": "eks:nodegroup-name",
                    "Value": nodegroup.nodegroup_name,
                    "PropagateAtLaunch": False,
                }
            ],
        )
        nodegroup.resources = {"autoScalingGroups": [{"name": asg_name}]}
    return nodegroup


EKSBackend.create_nodegroup = _create_nodegroup


# TagResource / UntagResource / ListTagsForResource: moto tags clusters only. EKS tags node groups too (the API
# reference: "You can use this API to tag your Amazon EKS clusters and managed node groups"); DescribeNodegroup
# returns them in `tags`. Node group tags are not propagated to its Auto Scaling group or nodes (as in EKS).
def _nodegroup_by_arn(backend, resource_arn):
    for cluster in backend.clusters.values():
        for nodegroup in getattr(cluster, "nodegroups", {}).values():
            if nodegroup.arn == resource_arn:
                return nodegroup
    return None


def _wrap_tagging(name, on_nodegroup):
    original = getattr(EKSBackend, name)

    def wrapped(self, resource_arn, *args, **kwargs):
        nodegroup = _nodegroup_by_arn(self, resource_arn)
        if nodegroup is None:
            return original(self, resource_arn, *args, **kwargs)
        return on_nodegroup(nodegroup, *args, **kwargs)

    setattr(EKSBackend, name, wrapped)


def _tag_nodegroup(nodegroup, tags):
    nodegroup.tags = dict(nodegroup.tags or {})
    nodegroup.tags.update(tags)


def _untag_nodegroup(nodegroup, tag_keys):
    keys = tag_keys if isinstance(tag_keys, list) else [tag_keys]
    nodegroup.tags = {k: v for k, v in (nodegroup.tags or {}).items() if k not in keys}


_wrap_tagging("tag_resource", _tag_nodegroup)
_wrap_tagging("untag_resource", _untag_nodegroup)
_wrap_tagging("list_tags_for_resource", lambda nodegroup: dict(nodegroup.tags or {}))


def _nodegroup(account, region, cluster_name, nodegroup_name):
    backend = eks_backends[account][region]
    cluster = backend.clusters.get(cluster_name)
    if cluster is None:
        raise ResourceNotFoundException(clusterName=cluster_name, message=f"No cluster found for name: {cluster_name}.")
    nodegroup = cluster.nodegroups.get(nodegroup_name)
    if nodegroup is None:
        raise ResourceNotFoundException(
            clusterName=cluster_name, nodegroupName=nodegroup_name, message=f"No node group found for name: {nodegroup_name}."
        )
    return nodegroup


def _begin(record, kind, account, region, name):
    """Starts the clock of an update or refresh: in "auto" mode it ends `STATE.duration` seconds later (the ticker
    thread ends it; reads never change state). Recorded in the timeline."""
    record["_due"] = time.monotonic() + STATE.duration
    entry = {"kind": kind, "account": account, "region": region, "name": name, "start": time.time(), "end": None}
    entry["id"] = record.get("id") or record.get("InstanceRefreshId")
    record["_timeline"] = entry
    STATE.timeline.append(entry)


def _ended(record):
    if record.get("_timeline") is not None and record["_timeline"]["end"] is None:
        record["_timeline"]["end"] = time.time()


def _tick():
    """Ends every update and refresh whose time is up ("auto" mode), as time passes in AWS."""
    while True:
        time.sleep(0.05)
        with LOCK:
            if STATE.mode != "auto":
                continue
            now = time.monotonic()
            for (account, region, _cluster), updates in list(STATE.updates.items()):
                for update in list(updates.values()):
                    if update["status"] == "InProgress" and update.get("_due", now + 1) <= now:
                        try:
                            _finish_update(account, region, update, *(update.get("_scripted") or ("Successful",)))
                        except ResourceNotFoundException:
                            # Assumption: an update of a node group deleted meanwhile ends Cancelled.
                            update["status"] = "Cancelled"
                            _ended(update)
            for ami, due in list(STATE.copies):
                if due <= now:
                    if ami.state == "pending":
                        ami.state = "failed" if getattr(ami, "opsy_fails", False) else "available"
                    STATE.copies.remove((ami, due))
            for (account, region, _name), history in list(STATE.refreshes.items()):
                for refresh in history:
                    if refresh["Status"] in ACTIVE_REFRESH and refresh.get("_due", now + 1) <= now:
                        status, _code, message = refresh.get("_scripted") or ("Successful", None, None)
                        try:
                            _finish_refresh(account, region, refresh, status, message)
                        except AutoscalingClientError:
                            refresh["Status"] = "Cancelled"
                            _ended(refresh)
                    elif refresh["Status"] in ("Pending", "InProgress"):
                        # Auto Scaling reports Pending first, then InProgress with a growing percentage.
                        started = refresh["_due"] - STATE.duration
                        part = (now - started) / max(STATE.duration, 0.001)
                        refresh["Status"] = "Pending" if part < 0.1 else "InProgress"
                        refresh["PercentageComplete"] = min(90, int(part * 100))


def _finish_update(account, region, update, status, code=None, message=None):
    update["status"] = status
    _ended(update)
    nodegroup = _nodegroup(account, region, update["_cluster"], update["_nodegroup"])
    nodegroup.status = "ACTIVE"
    if status == "Successful" and update["type"] == "ConfigUpdate":
        # Assumption (the API reference documents the update, not when DescribeNodegroup shows the new values):
        # the node group reports the new updateConfig once the update succeeded, and never after a failure.
        # maxUnavailable and maxUnavailablePercentage are alternatives: setting one replaces the other.
        config = dict(nodegroup.update_config or {})
        wanted = update["_config"]
        if "maxUnavailable" in wanted or "maxUnavailablePercentage" in wanted:
            config.pop("maxUnavailable", None)
            config.pop("maxUnavailablePercentage", None)
        config.update(wanted)
        nodegroup.update_config = config
    elif status == "Successful":
        new_version = update["_version"]
        nodegroup.launch_template = dict(nodegroup.launch_template, version=new_version)
        for asg in (nodegroup.resources or {}).get("autoScalingGroups", []):
            group = autoscaling_backends[account][region].autoscaling_groups.get(asg["name"])
            if group is not None:
                group.launch_template_version = new_version
                group.provided_launch_template_version = new_version
    elif status == "Failed":
        update["errors"] = [
            {
                "errorCode": code or "NodeCreationFailure",
                "errorMessage": message or "Instances failed to join the kubernetes cluster",
                "resourceIds": [update["_nodegroup"]],
            }
        ]


def _refuse_while_busy(updates, cluster_name, nodegroup):
    """EKS refuses a node group update while another runs, and while the node group is being created or deleted
    (ResourceInUseException). Assumption: a DEGRADED node group accepts updates (an update is how it is repaired)."""
    name = nodegroup.nodegroup_name
    if any(u["_nodegroup"] == name and u["status"] == "InProgress" for u in updates.values()):
        raise ResourceInUseException(
            clusterName=cluster_name,
            nodegroupName=name,
            message=f"Nodegroup {name} is currently in use by another update",
        )
    if nodegroup.status in ("CREATING", "DELETING", "CREATE_FAILED", "DELETE_FAILED"):
        raise ResourceInUseException(
            clusterName=cluster_name,
            nodegroupName=name,
            message=f"Nodegroup {name} is in status {nodegroup.status} and cannot be updated",
        )


def _public(update):
    return {k: v for k, v in update.items() if not k.startswith("_")}


def update_nodegroup_version(self):
    cluster_name = self._get_param("name")
    nodegroup_name = self._get_param("nodegroupName")
    launch_template = self._get_param("launchTemplate") or {}
    account, region = self.current_account, self.region
    with LOCK:
        nodegroup = _nodegroup(account, region, cluster_name, nodegroup_name)
        updates = STATE.updates.setdefault((account, region, cluster_name), {})
        _refuse_while_busy(updates, cluster_name, nodegroup)
        current = nodegroup.launch_template
        if launch_template and not current:
            raise InvalidParameterException(message="The node group was not created with a launch template")
        params = []
        new_version = None
        if launch_template:
            wanted_id = launch_template.get("id")
            wanted_name = launch_template.get("name")
            if (wanted_id and wanted_id != current["id"]) or (wanted_name and wanted_name != current["name"]):
                raise InvalidParameterException(
                    message="You cannot specify a different launch template than the one the node group was created with"
                )
            ec2 = ec2_backends[account][region]
            template = ec2.get_launch_template(current["id"])
            version = launch_template.get("version") or str(template.default_version_number)
            resolved = template.get_version(version)
            new_version = str(resolved.number)
            params = [
                {"type": "LaunchTemplateName", "value": template.name},
                {"type": "LaunchTemplateVersion", "value": new_version},
            ]
        if self._get_param("force"):
            params.append({"type": "Force", "value": "true"})
        update = {
            "id": str(uuid.uuid4()),
            "status": "InProgress",
            "type": "VersionUpdate",
            "params": params,
            "createdAt": utcnow(),
            "errors": [],
            "_cluster": cluster_name,
            "_nodegroup": nodegroup_name,
            "_version": new_version or current.get("version") if current else None,
        }
        _begin(update, "eks", account, region, nodegroup_name)
        updates[update["id"]] = update
        nodegroup.status = "UPDATING"
        outcome = STATE.outcomes.pop(("eks", account, region, nodegroup_name), None)
        if outcome is not None:
            update["_scripted"] = outcome
        return ActionResult({"update": _public(update)})


def update_nodegroup_config(self):
    """UpdateNodegroupConfig as EKS does it: asynchronous. moto applies the config at once and returns a
    `Successful` update that DescribeUpdate cannot find; EKS returns an `InProgress` update to track with DescribeUpdate
    and refuses a second update while one runs (ResourceInUseException, as for UpdateNodegroupVersion).
    Only `updateConfig` is emulated this way (what the operator sends); requests with labels, taints, scaling or
    repair config go to moto unchanged."""
    if any(self._get_param(key) for key in ("labels", "taints", "scalingConfig", "nodeRepairConfig")):
        return _original_update_nodegroup_config(self)
    cluster_name = self._get_param("name")
    nodegroup_name = self._get_param("nodegroupName")
    wanted = self._get_param("updateConfig") or {}
    account, region = self.current_account, self.region
    with LOCK:
        nodegroup = _nodegroup(account, region, cluster_name, nodegroup_name)
        updates = STATE.updates.setdefault((account, region, cluster_name), {})
        _refuse_while_busy(updates, cluster_name, nodegroup)
        if not wanted:
            raise InvalidParameterException(message="No changes needed")
        names = {"maxUnavailable": "MaxUnavailable", "maxUnavailablePercentage": "MaxUnavailablePercentage", "updateStrategy": "UpdateStrategy"}
        update = {
            "id": str(uuid.uuid4()),
            "status": "InProgress",
            "type": "ConfigUpdate",
            "params": [{"type": names.get(k, k), "value": str(v)} for k, v in wanted.items()],
            "createdAt": utcnow(),
            "errors": [],
            "_cluster": cluster_name,
            "_nodegroup": nodegroup_name,
            "_config": dict(wanted),
            "_version": None,
        }
        _begin(update, "eks", account, region, nodegroup_name)
        updates[update["id"]] = update
        nodegroup.status = "UPDATING"
        outcome = STATE.outcomes.pop(("eks", account, region, nodegroup_name), None)
        if outcome is not None:
            update["_scripted"] = outcome
        return ActionResult({"update": _public(update)})


_original_update_nodegroup_config = EKSResponse.update_nodegroup_config


def describe_update(self):
    cluster_name = self._get_param("name")
    update_id = self._get_param("updateId")
    nodegroup_name = self._get_param("nodegroupName")
    account, region = self.current_account, self.region
    with LOCK:
        update = STATE.updates.get((account, region, cluster_name), {}).get(update_id)
        # The API reference: nodegroupName "is required if the update is a node group update". Assumption: EKS
        # looks node group updates up under the node group, so a missing or different name finds nothing.
        if update is not None and update.get("_nodegroup") and update["_nodegroup"] != nodegroup_name:
            update = None
        if update is None:
            raise ResourceNotFoundException(clusterName=cluster_name, message=f"No update found for ID: {update_id}")
        return ActionResult({"update": _public(update)})


def list_updates(self):
    cluster_name = self._get_param("name")
    nodegroup_name = self._get_param("nodegroupName")
    account, region = self.current_account, self.region
    with LOCK:
        updates = STATE.updates.get((account, region, cluster_name), {}).values()
        ids = [u["id"] for u in updates if nodegroup_name is None or u["_nodegroup"] == nodegroup_name]
    return ActionResult({"updateIds": ids})


EKSResponse.update_nodegroup_version = update_nodegroup_version
EKSResponse.update_nodegroup_config = update_nodegroup_config
EKSResponse.describe_update = describe_update
EKSResponse.list_updates = list_updates
eks_urls.url_paths.update(
    {
        "{0}/clusters/(?P<name>[^/]+)/node-groups/(?P<nodegroupName>[^/]+)/update-version$": eks_urls.response.dispatch,
        "{0}/clusters/(?P<name>[^/]+)/updates$": eks_urls.response.dispatch,
        "{0}/clusters/(?P<name>[^/]+)/updates/(?P<updateId>[^/]+)$": eks_urls.response.dispatch,
    }
)


# --------------------------------------------------------------------------------------------------------------
# Auto Scaling instance refresh
# --------------------------------------------------------------------------------------------------------------

ACTIVE_REFRESH = ("Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking")


def _asg(account, region, name):
    group = autoscaling_backends[account][region].autoscaling_groups.get(name)
    if group is None:
        raise AutoscalingClientError("ValidationError", f"AutoScalingGroup name not found - {name}")
    return group


def _finish_refresh(account, region, refresh, status, reason=None):
    refresh["Status"] = status
    _ended(refresh)
    refresh["EndTime"] = utcnow()
    refresh["StatusReason"] = reason or status
    if status == "Successful":
        refresh["PercentageComplete"] = 100
        template = (refresh.get("DesiredConfiguration") or {}).get("LaunchTemplate")
        if template:
            group = _asg(account, region, refresh["AutoScalingGroupName"])
            version = str(template.get("Version") or "$Default")
            group.launch_template_version = version
            group.provided_launch_template_version = version


def _validate_desired(account, region, group, desired):
    """Auto Scaling validates the desired configuration's launch template (ValidationError when the template or the
    version does not exist). Returns whether the group already launches from exactly that template version."""
    template = (desired or {}).get("LaunchTemplate")
    if not template:
        return False
    ec2 = ec2_backends[account][region]
    try:
        lt = (
            ec2.get_launch_template(template["LaunchTemplateId"])
            if template.get("LaunchTemplateId")
            else ec2.get_launch_template_by_name(template.get("LaunchTemplateName"))
        )
    except Exception:  # noqa: BLE001 - moto raises its own not-found errors
        raise AutoscalingClientError("ValidationError", f"The launch template {template} does not exist")
    version = str(template.get("Version") or "$Default")
    try:
        resolved = lt.get_version(version)
    except Exception:  # noqa: BLE001
        raise AutoscalingClientError("ValidationError", f"Launch template {lt.id} has no version {version}")
    current_id = getattr(getattr(group, "ec2_launch_template", None), "id", None)
    current_version = str(getattr(group, "launch_template_version", None) or "$Default")
    try:
        current = lt.get_version(current_version) if current_id == lt.id else None
    except Exception:  # noqa: BLE001
        current = None
    return current is not None and current.number == resolved.number


def start_instance_refresh(self):
    name = self._get_param("AutoScalingGroupName")
    account, region = self.current_account, self.region
    with LOCK:
        group = _asg(account, region, name)
        history = STATE.refreshes.setdefault((account, region, name), [])
        if any(r["Status"] in ACTIVE_REFRESH for r in history):
            raise AutoscalingClientError("InstanceRefreshInProgress", f"An Instance Refresh is already in progress for {name}")
        desired = self._get_param("DesiredConfiguration") or {}
        preferences = self._get_param("Preferences") or {}
        matching = _validate_desired(account, region, group, desired)
        refresh = {
            "InstanceRefreshId": str(uuid.uuid4()),
            "AutoScalingGroupName": name,
            "Status": "InProgress",
            "StatusReason": "Refreshing instances",
            "StartTime": utcnow(),
            "PercentageComplete": 0,
            "InstancesToUpdate": len(group.instance_states),
            "Preferences": preferences,
            "DesiredConfiguration": desired,
            "Strategy": self._get_param("Strategy") or "Rolling",
        }
        _begin(refresh, "asg", account, region, name)
        refresh["Status"] = "Pending"
        # SkipMatching (the default in AWS since 2023 for the console; the API default is false): instances that
        # already match the desired configuration are not replaced. The emulator does not model instances one by
        # one; assumption: when the group itself already launches from the desired template version, nothing needs
        # replacing and the refresh ends at once.
        if preferences.get("SkipMatching") in (True, "true") and matching:
            refresh["InstancesToUpdate"] = 0
            refresh["_due"] = time.monotonic()
        scripted = STATE.outcomes.pop(("asg", account, region, name), None)
        if scripted is not None:
            refresh["_scripted"] = scripted
        history.append(refresh)
        return ActionResult({"InstanceRefreshId": refresh["InstanceRefreshId"]})


def describe_instance_refreshes(self):
    name = self._get_param("AutoScalingGroupName")
    ids = self._get_param("InstanceRefreshIds") or []
    account, region = self.current_account, self.region
    with LOCK:
        _asg(account, region, name)
        history = STATE.refreshes.get((account, region, name), [])
        out = []
        for refresh in reversed(history):
            if ids and refresh["InstanceRefreshId"] not in ids:
                continue
            out.append({k: v for k, v in refresh.items() if not k.startswith("_")})
    return ActionResult({"InstanceRefreshes": out})


def _active_refresh(account, region, name):
    for refresh in STATE.refreshes.get((account, region, name), []):
        if refresh["Status"] in ACTIVE_REFRESH:
            return refresh
    raise AutoscalingClientError("ActiveInstanceRefreshNotFound", f"No in progress or pending Instance Refresh found for {name}")


def cancel_instance_refresh(self):
    name = self._get_param("AutoScalingGroupName")
    with LOCK:
        _asg(self.current_account, self.region, name)
        refresh = _active_refresh(self.current_account, self.region, name)
        _finish_refresh(self.current_account, self.region, refresh, "Cancelled", "Cancelled by the caller")
        return ActionResult({"InstanceRefreshId": refresh["InstanceRefreshId"]})


def rollback_instance_refresh(self):
    name = self._get_param("AutoScalingGroupName")
    with LOCK:
        _asg(self.current_account, self.region, name)
        refresh = _active_refresh(self.current_account, self.region, name)
        _finish_refresh(self.current_account, self.region, refresh, "RollbackSuccessful", "Rolled back by the caller")
        return ActionResult({"InstanceRefreshId": refresh["InstanceRefreshId"]})


AutoScalingResponse.start_instance_refresh = start_instance_refresh
AutoScalingResponse.describe_instance_refreshes = describe_instance_refreshes
AutoScalingResponse.cancel_instance_refresh = cancel_instance_refresh
AutoScalingResponse.rollback_instance_refresh = rollback_instance_refresh


# --------------------------------------------------------------------------------------------------------------
# EC2 CreateLaunchTemplateVersion with SourceVersion
# --------------------------------------------------------------------------------------------------------------


def create_launch_template_version(self):
    name = self._get_param("LaunchTemplateName")
    tmpl_id = self._get_param("LaunchTemplateId")
    template = self.ec2_backend.get_launch_template_by_name(name) if name else self.ec2_backend.get_launch_template(tmpl_id)
    description = self._get_param("VersionDescription")
    data = self._get_param("LaunchTemplateData", {}) or {}
    source_version = self._get_param("SourceVersion")
    if source_version:
        # AWS semantics: start from the source version; the given top-level parameters replace its values.
        merged = dict(template.get_version(source_version).data)
        merged.update(data)
        data = merged
    self.error_on_dryrun()
    version = template.create_version(data, description)
    return ActionResult(
        {
            "LaunchTemplateVersion": {
                "CreateTime": version.create_time,
                "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
                "DefaultVersion": template.is_default(version),
                "LaunchTemplateData": version.data,
                "LaunchTemplateId": template.id,
                "LaunchTemplateName": template.name,
                "VersionDescription": version.description,
                "VersionNumber": version.number,
            }
        }
    )


LaunchTemplates.create_launch_template_version = create_launch_template_version


# DeleteLaunchTemplateVersions (moto 5.2.5 lacks it). moto numbers versions by their index in a list, so a deleted
# version stays as a tombstone: not described, not resolvable, numbers never reused (as in EC2). As the API reference
# says, the default version cannot be deleted (reported per version; assumption: with error code `unexpectedError`,
# the documented codes name none for this case); a version that does not exist is reported as
# `launchTemplateVersionDoesNotExist`.
from moto.ec2.exceptions import InvalidLaunchTemplateVersionNotFound  # noqa: E402
from moto.ec2.models import EC2Backend, launch_templates as _lt_models  # noqa: E402

_original_get_version = _lt_models.LaunchTemplate.get_version


def _get_version(self, num):
    live = [v for v in self.versions if not getattr(v, "_deleted", False)]
    if str(num).lower() == "$latest":
        return live[-1]
    version = _original_get_version(self, num)
    if getattr(version, "_deleted", False):
        raise InvalidLaunchTemplateVersionNotFound(template_id=self.id, version=num)
    return version


_lt_models.LaunchTemplate.get_version = _get_version
_lt_models.LaunchTemplate.latest_version = lambda self: _get_version(self, "$Latest")
_original_describe_lt_versions = EC2Backend.describe_launch_template_versions


def _describe_lt_versions(self, *args, **kwargs):
    return [(t, v) for t, v in _original_describe_lt_versions(self, *args, **kwargs) if not getattr(v, "_deleted", False)]


EC2Backend.describe_launch_template_versions = _describe_lt_versions


def delete_launch_template_versions(self):
    name = self._get_param("LaunchTemplateName")
    tmpl_id = self._get_param("LaunchTemplateId")
    template = self.ec2_backend.get_launch_template_by_name(name) if name else self.ec2_backend.get_launch_template(tmpl_id)
    self.error_on_dryrun()
    ok, failed = [], []
    for text in self._get_param("Versions", []) or []:
        item = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}
        try:
            version = template.get_version(int(text))
        except (InvalidLaunchTemplateVersionNotFound, ValueError, IndexError):
            failed.append(dict(item, VersionNumber=int(text) if str(text).isdigit() else 0,
                               ResponseError={"Code": "launchTemplateVersionDoesNotExist", "Message": f"version {text} does not exist"}))
            continue
        if template.is_default(version):
            failed.append(dict(item, VersionNumber=version.number,
                               ResponseError={"Code": "unexpectedError", "Message": "the default version cannot be deleted"}))
            continue
        version._deleted = True
        ok.append(dict(item, VersionNumber=version.number))
    return ActionResult({"SuccessfullyDeletedLaunchTemplateVersions": ok, "UnsuccessfullyDeletedLaunchTemplateVersions": failed})


LaunchTemplates.delete_launch_template_versions = delete_launch_template_versions


# --------------------------------------------------------------------------------------------------------------
# EC2 tags of one resource in O(its tags)
# --------------------------------------------------------------------------------------------------------------
# moto's TaggedEC2Resource.get_tags() calls describe_tags(resource-id=<id>), which walks every tag of every resource
# in the region with regular expressions. Tag-filtered DescribeImages calls it once per image per filter, so one
# call costs O(images x all tags): with 1,000 AMIs of 15 tags, seconds per call. This answers the same list (same
# entries, same order: the resource's tags in insertion order) from the backend's per-resource tag map. Switchable
# (/_ext/fast-tags) so a test can compare both answers.
from moto.ec2.models.core import TaggedEC2Resource  # noqa: E402
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix  # noqa: E402

_original_get_tags = TaggedEC2Resource.get_tags
FAST_TAGS = {"on": True}
# The account of the request being served (per server thread): whose view of tags a response shows.
_REQUEST = threading.local()


def _fast_get_tags(self):
    # EC2 shows an AMI's tags only to the account that owns it: an account the AMI is shared with (or a public AMI's
    # user) sees no tags, and tag filters never match them.
    if isinstance(self, Ami) and getattr(self, "owner_id", None) not in (
        None,
        getattr(_REQUEST, "account", None) or self.ec2_backend.account_id,
    ):
        return []
    if not FAST_TAGS["on"] or not getattr(self, "id", None):
        return _original_get_tags(self)
    tags = self.ec2_backend.tags.get(self.id)
    if not tags:
        return []
    resource_type = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
    return [
        {"resource_id": self.id, "key": key, "value": value, "resource_type": resource_type}
        for key, value in tags.items()
    ]


TaggedEC2Resource.get_tags = _fast_get_tags


# --------------------------------------------------------------------------------------------------------------
# Request identification, call log, fault injection
# --------------------------------------------------------------------------------------------------------------

_BOTOCORE = botocore.session.get_session()
_MODELS = {}
_REST_ROUTES = {}


def _model(service):
    if service not in _MODELS:
        name = {"email": "sesv2", "ses": "sesv2"}.get(service, service)
        try:
            _MODELS[service] = _BOTOCORE.get_service_model(name)
        except Exception:  # noqa: BLE001 - unknown services are passed through untouched
            _MODELS[service] = None
    return _MODELS[service]


def _rest_routes(service):
    if service not in _REST_ROUTES:
        routes = []
        model = _model(service)
        for op_name in model.operation_names if model else []:
            http = model.operation_model(op_name).http
            uri = http.get("requestUri", "/").split("?")[0]
            pattern = re.sub(r"\{[^}]+\+\}", ".+", uri)
            pattern = re.sub(r"\{[^}]+\}", "[^/]+", pattern)
            routes.append((http.get("method", "GET"), re.compile(f"^{pattern}$"), op_name, pattern.count("/")))
        # Most specific first: longer literal paths win.
        routes.sort(key=lambda r: -len(r[1].pattern))
        _REST_ROUTES[service] = routes
    return _REST_ROUTES[service]


def request_params(environ, body):
    """Query-protocol parameters of a call (minus Action/Version), for tests that count calls by what they asked."""
    params = {}
    for source in (environ.get("QUERY_STRING", ""), body.decode("utf-8", "replace")
                   if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded") else ""):
        for key, values in urllib.parse.parse_qs(source).items():
            if key not in ("Action", "Version"):
                params[key] = values[0]
    return params


def identify(environ, body):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    match = re.search(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/aws4_request", auth)
    region, service = (match.group(1), match.group(2)) if match else ("", "")
    action = None
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in query:
        action = query["Action"][0]
    elif environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        if "Action" in form:
            action = form["Action"][0]
    if action is None and environ.get("HTTP_X_AMZ_TARGET"):
        action = environ["HTTP_X_AMZ_TARGET"].split(".")[-1]
    if action is None and service:
        # The undecoded path: a label such as TagResource's `{resourceArn}` carries `/` encoded as `%2F`.
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
        method, path = environ.get("REQUEST_METHOD", "GET"), raw.split("?")[0]
        for route_method, regex, op_name, _ in _rest_routes(service):
            if route_method == method and regex.match(path):
                action = op_name
                break
    return service, region, action or "Unknown"


def fault_response(service, fault, start_response):
    model = _model(service)
    protocol = model.metadata.get("protocol") if model else "query"
    status = f"{fault['status']} Injected"
    request_id = str(uuid.uuid4())
    code, message = fault["code"], fault.get("message") or f"injected fault {fault['code']}"
    if service == "ec2":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
        headers = [("Content-Type", "text/xml")]
    elif protocol == "query":
        body = (
            f'<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>'
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        headers = [("Content-Type", "text/xml")]
    elif protocol == "json":
        body = json.dumps({"__type": code, "message": message})
        headers = [("Content-Type", "application/x-amz-json-1.1")]
    else:
        body = json.dumps({"message": message})
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    headers.append(("x-amzn-RequestId", request_id))
    start_response(status, headers)
    return [body.encode()]


class Extension:
    """WSGI middleware in front of moto: control API, call log, faults."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if path.startswith("/_ext/"):
            return control(environ, body, start_response)
        if path.startswith("/moto-api/reset"):
            reset_extension_state()
            return self.app(environ, start_response)
        if path.startswith("/moto-api"):
            return self.app(environ, start_response)
        service, region, action = identify(environ, body)
        if "HTTP_X_MOTO_ACCOUNT_ID" not in environ:
            # A process started with `AwsEmulator::child_env_in` signs with the access key `opsy<account>`: it works in
            # that account (moto itself would put every unknown key in its default account).
            found = re.search(r"Credential=opsy(\d{12})/", environ.get("HTTP_AUTHORIZATION", ""))
            if found:
                environ["HTTP_X_MOTO_ACCOUNT_ID"] = found.group(1)
        account = environ.get("HTTP_X_MOTO_ACCOUNT_ID", DEFAULT_ACCOUNT)
        _REQUEST.account = account
        fault = None
        with LOCK:
            STATE.calls.append(
                {
                    "account": account,
                    "service": service,
                    "region": region,
                    "action": action,
                    "params": request_params(environ, body),
                    "path": environ.get("PATH_INFO", "/"),
                }
            )
            for rule in STATE.faults:
                if (
                    rule["remaining"] > 0
                    and rule["service"] == service
                    and rule["action"] == action
                    and rule.get("account") in (None, account)
                ):
                    rule["remaining"] -= 1
                    fault = rule
                    break
        if fault is not None:
            if fault.get("delay_ms"):
                time.sleep(fault["delay_ms"] / 1000.0)
            if fault.get("code"):
                return fault_response(service, fault, start_response)
        return self.app(environ, start_response)


def reset_extension_state():
    with LOCK:
        global STATE
        STATE = State()


# --------------------------------------------------------------------------------------------------------------
# Control API
# --------------------------------------------------------------------------------------------------------------


def _json(start_response, status, payload):
    start_response(status, [("Content-Type", "application/json")])
    return [json.dumps(payload, default=str).encode()]


def _parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else utcnow()


# DescribeImages with ImageIds and Owners: moto ignores Owners when ImageIds are given; EC2 applies both (an AMI
# named by ID but owned by an account not listed is not returned). `self` is the caller's account.
from moto.ec2.models import EC2Backend  # noqa: E402
from moto.ec2.exceptions import EC2ClientError  # noqa: E402

_original_describe_images = EC2Backend.describe_images


def _shared_with(backend):
    """AMIs of other accounts in the backend's region whose launch permissions name the backend's account."""
    shared = []
    for account_id, regions in list(ec2_backends.items()):
        if account_id == backend.account_id:
            continue
        other = dict.get(regions, backend.region_name)
        if other is None:
            continue
        for ami in list(other.amis.values()):
            if {"UserId": backend.account_id} in ami.launch_permissions:
                shared.append(ami)
    return shared


def _describe_images(self, ami_ids=None, filters=None, exec_users=None, owners=None):
    try:
        images = _original_describe_images(
            self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners
        )
        missing = None
    except EC2ClientError as error:
        if not ami_ids:
            raise
        images, missing = [], error
    # EC2 (not moto): an AMI another account shared with this one (launch permission for this account ID) is found by
    # ID, by its owner's ID in Owners, and by filters; its tags stay invisible (see _fast_get_tags).
    shared = _shared_with(self)
    if ami_ids:
        shared = [a for a in shared if a.id in ami_ids]
    if owners:
        shared = [a for a in shared if a.owner_id in owners]
    if filters:
        from moto.ec2.utils import generic_filter

        shared = generic_filter(filters, shared)
    if missing is not None and not shared:
        raise missing
    images = list(images) + [a for a in shared if a not in images]
    if ami_ids and owners:
        wanted = {self.account_id if o == "self" else o for o in owners}
        images = [i for i in images if i.owner_id in wanted]
    return images


EC2Backend.describe_images = _describe_images


# EnableImageDeprecation / DisableImageDeprecation (moto 5.2.5 has neither; its DescribeImages shows an AMI's
# `deprecation_time` attribute as DeprecationTime). As the API reference says: only the owner may change it, a time in
# the past is refused, seconds are rounded to the nearest minute.
from moto.ec2.responses.amis import AmisResponse  # noqa: E402


def _owned_ami(response, image_id):
    backend = response.ec2_backend
    ami = backend.amis.get(image_id)
    if ami is None or ami.owner_id != backend.account_id:
        # Assumption: another account's AMI answers as not found for this call.
        raise EC2ClientError("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")
    return ami


def enable_image_deprecation(self):
    ami = _owned_ami(self, self._get_param("ImageId"))
    at = self._get_param("DeprecateAt")
    if isinstance(at, str):
        at = datetime.datetime.fromisoformat(at.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.timezone.utc)
    at = (at + datetime.timedelta(seconds=30)).replace(second=0, microsecond=0)
    if at <= utcnow():
        raise EC2ClientError("InvalidParameterValue", "The deprecation time cannot be in the past")
    ami.deprecation_time = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return ActionResult({"Return": True})


def disable_image_deprecation(self):
    ami = _owned_ami(self, self._get_param("ImageId"))
    ami.deprecation_time = None
    return ActionResult({"Return": True})


AmisResponse.enable_image_deprecation = enable_image_deprecation
AmisResponse.disable_image_deprecation = disable_image_deprecation


# CopyImage as EC2 does it (moto 5.2.5 copies at once, ignores ClientToken, TagSpecifications, CopyImageTags, Encrypted
# and KmsKeyId): the copy is `pending` for `STATE.copy_seconds` (/_ext/copy), then `available`; a repeated ClientToken
# answers the first copy's ID (EC2's idempotency); tags of TagSpecifications go on the copy and its snapshot when it is
# made; CopyImageTags copies the source's user tags; an encrypted copy shows Encrypted and its KMS key in its block
# device mapping. Assumptions: KmsKeyId without Encrypted is refused (InvalidParameterCombination, as the API reference
# requires Encrypted with KmsKeyId); the source must be an available AMI this account owns or may launch.
def copy_image(self):
    backend = self.ec2_backend
    token = self._get_param("ClientToken")
    key = (backend.account_id, backend.region_name, token)
    with LOCK:
        if token and key in STATE.copy_tokens:
            return ActionResult({"ImageId": STATE.copy_tokens[key]})
    source_id = self._get_param("SourceImageId")
    source_region = self._get_param("SourceRegion")
    encrypted = str(self._get_param("Encrypted", "false")).lower() == "true"
    kms_key = self._get_param("KmsKeyId")
    if kms_key and not encrypted:
        raise EC2ClientError("InvalidParameterCombination", "KmsKeyId requires Encrypted to be true")
    source_backend = ec2_backends[backend.account_id][source_region]
    found = [a for a in source_backend.describe_images(ami_ids=[source_id]) if a.id == source_id]
    if not found or found[0].state != "available":
        raise EC2ClientError("InvalidAMIID.NotFound", f"The image id '[{source_id}]' does not exist")
    source = found[0]
    tags = self._parse_tag_specification()
    self.error_on_dryrun()
    image = backend.copy_image(source_id, source_region, self._get_param("Name"), self._get_param("Description"))
    image.state = "pending"
    image.opsy_encrypted = encrypted
    image.opsy_kms_key_id = kms_key or ("alias/aws/ebs" if encrypted else None)
    if str(self._get_param("CopyImageTags", "false")).lower() == "true" and source.owner_id == backend.account_id:
        user_tags = {k: v for k, v in (source_backend.tags.get(source.id) or {}).items() if not k.startswith("aws:")}
        if user_tags:
            backend.create_tags([image.id], user_tags)
    if tags.get("image"):
        backend.create_tags([image.id], tags["image"])
    if tags.get("snapshot"):
        backend.create_tags([image.ebs_snapshot.id], tags["snapshot"])
    with LOCK:
        if token:
            STATE.copy_tokens[key] = image.id
        if STATE.copy_failures > 0:
            STATE.copy_failures -= 1
            image.opsy_fails = True
        STATE.copies.append((image, time.monotonic() + STATE.copy_seconds))
    return ActionResult({"ImageId": image.id})


AmisResponse.copy_image = copy_image

_original_block_device_mappings = Ami.block_device_mappings


def _block_device_mappings(self):
    mappings = _original_block_device_mappings.fget(self)
    if getattr(self, "opsy_encrypted", False):
        for mapping in mappings:
            mapping["Ebs"]["Encrypted"] = True
            mapping["Ebs"]["KmsKeyId"] = self.opsy_kms_key_id
    return mappings


Ami.block_device_mappings = property(_block_device_mappings)


def seed_images(payload):
    account = payload.get("account", DEFAULT_ACCOUNT)
    region = payload["region"]
    backend = ec2_backends[account][region]
    ids = []
    for spec in payload["images"]:
        ami_id = spec.get("id") or random_ami_id()
        ami = Ami(
            backend,
            ami_id=ami_id,
            name=spec.get("name"),
            description=spec.get("description"),
            owner_id=spec.get("ownerId", account),
            public=spec.get("public", True),
            architecture=spec.get("architecture", "x86_64"),
            state=spec.get("state", "available"),
            creation_date=_parse_time(spec.get("creationDate")),
            virtualization_type="hvm",
            root_device_name="/dev/xvda",
            root_device_type="ebs",
            region_name=region,
        )
        backend.amis[ami_id] = ami
        if spec.get("tags"):
            backend.create_tags([ami_id], spec["tags"])
        ids.append(ami_id)
    return {"imageIds": ids}


def seed_ssm(payload):
    account = payload.get("account", DEFAULT_ACCOUNT)
    backend = ssm_backends[account][payload["region"]]
    for spec in payload["parameters"]:
        backend._parameters[spec["name"]].append(
            Parameter(
                account_id=account,
                name=spec["name"],
                value=spec["value"],
                parameter_type=spec.get("type", "String"),
                description=None,
                allowed_pattern=None,
                keyid=None,
                last_modified_date=utcnow(),
                version=len(backend._parameters[spec["name"]]) + 1,
                data_type=spec.get("dataType", "text"),
            )
        )
    return {"seeded": len(payload["parameters"])}


def set_outcome(kind, payload):
    account = payload.get("account", DEFAULT_ACCOUNT)
    region = payload["region"]
    status = payload.get("status", "Successful")
    code, message = payload.get("errorCode"), payload.get("errorMessage")
    with LOCK:
        if kind == "eks":
            updates = STATE.updates.get((account, region, payload["cluster"]), {})
            live = [u for u in updates.values() if u["_nodegroup"] == payload["nodegroup"] and u["status"] == "InProgress"]
            if live:
                _finish_update(account, region, live[-1], status, code, message)
                return {"finished": live[-1]["id"]}
            STATE.outcomes[("eks", account, region, payload["nodegroup"])] = (status, code, message)
        else:
            history = STATE.refreshes.get((account, region, payload["asg"]), [])
            live = [r for r in history if r["Status"] in ACTIVE_REFRESH]
            if live:
                _finish_refresh(account, region, live[-1], status, message)
                return {"finished": live[-1]["InstanceRefreshId"]}
            STATE.outcomes[("asg", account, region, payload["asg"])] = (status, code, message)
    return {"scripted": True}


def control(environ, body, start_response):
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    try:
        payload = json.loads(body) if body else {}
        if path == "/_ext/health":
            return _json(start_response, "200 OK", {"moto": PINNED_MOTO})
        if path == "/_ext/faults" and method == "POST":
            rule = {
                "id": str(uuid.uuid4()),
                "service": payload["service"],
                "action": payload["action"],
                "status": int(payload.get("status", 400)),
                "code": payload.get("code"),
                "message": payload.get("message"),
                "delay_ms": int(payload.get("delay_ms", 0)),
                "remaining": int(payload.get("count", 1)),
                "account": payload.get("account"),
            }
            with LOCK:
                STATE.faults.append(rule)
            return _json(start_response, "200 OK", {"id": rule["id"]})
        if path == "/_ext/faults" and method == "DELETE":
            with LOCK:
                STATE.faults.clear()
            return _json(start_response, "200 OK", {})
        if path == "/_ext/calls" and method == "GET":
            account = query.get("account", [None])[0]
            with LOCK:
                calls = [c for c in STATE.calls if account is None or c["account"] == account]
            return _json(start_response, "200 OK", calls)
        if path == "/_ext/calls" and method == "DELETE":
            with LOCK:
                STATE.calls.clear()
            return _json(start_response, "200 OK", {})
        if path == "/_ext/sent" and method == "GET":
            from moto.ses.models import ses_backends
            from moto.sns.models import sns_backends

            account = query.get("account", [DEFAULT_ACCOUNT])[0]
            region = query["region"][0]
            sns = [
                {"topicArn": arn, "message": n[1], "subject": n[2]}
                for arn, topic in sns_backends[account][region].topics.items()
                for n in topic.sent_notifications
            ]
            ses = [
                {"source": m.source, "subject": m.subject, "body": m.body, "destinations": m.destinations}
                for m in ses_backends[account][region].sent_messages
                if hasattr(m, "subject")
            ]
            return _json(start_response, "200 OK", {"sns": sns, "ses": ses})
        if path == "/_ext/progress" and method == "POST":
            with LOCK:
                STATE.mode = payload.get("mode", "auto")
                STATE.duration = float(payload.get("durationSeconds", STATE.duration))
                # Whatever runs now runs its full duration from now.
                due = time.monotonic() + STATE.duration
                for updates in STATE.updates.values():
                    for update in updates.values():
                        update["_due"] = due
                for history in STATE.refreshes.values():
                    for refresh in history:
                        refresh["_due"] = due
            return _json(start_response, "200 OK", {"mode": STATE.mode, "durationSeconds": STATE.duration})
        if path == "/_ext/copy" and method == "POST":
            with LOCK:
                STATE.copy_seconds = float(payload.get("durationSeconds", STATE.copy_seconds))
                STATE.copy_failures = int(payload.get("failNext", STATE.copy_failures))
            return _json(
                start_response,
                "200 OK",
                {"durationSeconds": STATE.copy_seconds, "failNext": STATE.copy_failures},
            )
        if path == "/_ext/timeline" and method == "GET":
            with LOCK:
                return _json(start_response, "200 OK", {"timeline": list(STATE.timeline)})
        if path == "/_ext/fast-tags" and method == "POST":
            FAST_TAGS["on"] = bool(payload.get("on", True))
            return _json(start_response, "200 OK", {"on": FAST_TAGS["on"]})
        if path == "/_ext/seed/images" and method == "POST":
            return _json(start_response, "200 OK", seed_images(payload))
        if path == "/_ext/seed/ssm" and method == "POST":
            return _json(start_response, "200 OK", seed_ssm(payload))
        if path == "/_ext/eks/outcome" and method == "POST":
            return _json(start_response, "200 OK", set_outcome("eks", payload))
        if path == "/_ext/autoscaling/outcome" and method == "POST":
            return _json(start_response, "200 OK", set_outcome("asg", payload))
        return _json(start_response, "404 Not Found", {"error": f"unknown control path {method} {path}"})
    except Exception as error:  # noqa: BLE001 - report control errors to the test
        return _json(start_response, "400 Bad Request", {"error": f"{type(error).__name__}: {error}"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="do not log every request")
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="exit when stdin closes, so the emulator never outlives the process that started it",
    )
    args = parser.parse_args()
    if args.exit_with_stdin:

        def watch_stdin():
            sys.stdin.buffer.read()
            os._exit(0)

        threading.Thread(target=watch_stdin, daemon=True).start()
    if args.quiet:
        MotoRequestHandler.log_request = lambda *_args, **_kwargs: None
    app = Extension(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=_tick, name="progress", daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
