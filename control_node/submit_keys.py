"""The keys of HTCondor's submit language, as data: what each means in dfarm.

Every key of the condor_submit manual page (HTCondor 24) is listed here, in one of
three groups: the keys dfarm carries out (read by ``control_node.submit_file``),
the keys stored as a job attribute with HTCondor's ClassAd name (shown by
``dq -l``), and the keys accepted with a warning that says why they have no effect.
Any other key defines a macro and does nothing else, as in HTCondor; dsub warns of
one the file never uses, with the nearest key it may have meant.

Keys are case-insensitive. ``ALIASES`` holds the other spellings condor_submit 24
reads as the same key (checked against its Python bindings: ``ShouldTransferFiles``
is ``should_transfer_files``, but ``MaxRetries`` is only a macro).
"""

from __future__ import annotations

import difflib
import re

from control_node.submit_requirements import DERIVED_KEYS

__all__ = [
    "ALIASES",
    "CARRIED_OUT",
    "CUSTOM_PREFIX",
    "HTCONDOR_KEYS",
    "IGNORED",
    "STORED",
    "canonical",
    "classad_value",
    "suggestion",
    "warning_for",
]

#: Keys dfarm carries out (``data``, ``email``, ``client``, ``random_seed`` and
#: ``result_file`` are dfarm's own).
CARRIED_OUT = frozenset({
    "executable", "arguments", "input", "output", "error", "log", "transfer_input_files",
    "transfer_output_files", "initialdir", "environment", "getenv", "request_cpus",
    "request_memory", "request_disk", "request_gpus", "notify_user", "notification",
    "priority", "universe", "should_transfer_files", "when_to_transfer_output",
    "max_retries", "allowed_job_duration", "requirements",
    "hold", "data", "email", "client", "notification_per_job", "random_seed", "result_file",
}) | DERIVED_KEYS  # fmt: skip

#: Keys stored as a job attribute: key -> (ClassAd name, kind of value). ``expr`` is
#: a ClassAd expression kept as written; ``string`` becomes a quoted ClassAd string,
#: ``unquoted`` too, less the double quotes around it; ``names`` a string of the names
#: joined by commas; ``kb`` a size in KiB (units as in ``request_disk``).
STORED: dict[str, tuple[str, str]] = {
    "batch_name": ("JobBatchName", "string"),
    "description": ("JobDescription", "string"),
    "rank": ("Rank", "expr"),
    "on_exit_hold": ("OnExitHold", "expr"),
    "on_exit_hold_reason": ("OnExitHoldReason", "expr"),
    "on_exit_hold_subcode": ("OnExitHoldSubCode", "expr"),
    "on_exit_remove": ("OnExitRemove", "expr"),
    "periodic_hold": ("PeriodicHold", "expr"),
    "periodic_hold_reason": ("PeriodicHoldReason", "expr"),
    "periodic_hold_subcode": ("PeriodicHoldSubCode", "expr"),
    "periodic_release": ("PeriodicRelease", "expr"),
    "periodic_remove": ("PeriodicRemove", "expr"),
    "transfer_executable": ("TransferExecutable", "expr"),
    "docker_image": ("DockerImage", "string"),
    "container_image": ("ContainerImage", "string"),
    "transfer_checkpoint_files": ("TransferCheckpoint", "string"),
    "checkpoint_exit_code": ("SuccessCheckpointExitCode", "expr"),
    "want_ft_on_checkpoint": ("WantFTOnCheckpoint", "expr"),
    "match_list_length": ("LastMatchListLength", "expr"),
    "accounting_group": ("AcctGroup", "string"),
    "accounting_group_user": ("AcctGroupUser", "string"),
    "concurrency_limits": ("ConcurrencyLimits", "string"),
    "kill_sig": ("KillSig", "string"),
    "want_graceful_removal": ("WantGracefulRemoval", "expr"),
    "job_max_vacate_time": ("JobMaxVacateTime", "expr"),
    "max_job_retirement_time": ("MaxJobRetirementTime", "expr"),
    "leave_in_queue": ("LeaveJobInQueue", "expr"),
    "success_exit_code": ("JobSuccessExitCode", "expr"),
    "transfer_output_remaps": ("TransferOutputRemaps", "unquoted"),
    "allowed_execute_duration": ("AllowedExecuteDuration", "expr"),
    "submit_event_notes": ("SubmitEventNotes", "string"),
    "job_ad_information_attrs": ("JobAdInformationAttrs", "string"),
    "email_attributes": ("EmailAttributes", "names"),
    "max_transfer_input_mb": ("MaxTransferInputMB", "expr"),
    "max_transfer_output_mb": ("MaxTransferOutputMB", "expr"),
    "next_job_start_delay": ("NextJobStartDelay", "expr"),
    "image_size": ("ImageSize", "kb"),
    "coresize": ("CoreSize", "expr"),
    "job_machine_attrs": ("JobMachineAttrs", "string"),
    "deferral_time": ("DeferralTime", "expr"),
    "remote_initialdir": ("RemoteIwd", "string"),
}

#: Why a stored key does not act (yet); a stored key not named here is information only
#: or acts as its attribute (the policies, evaluated by the scheduler).
_STORED_WHY = {
    "transfer_executable": "stored as TransferExecutable; the executable is always sent with"
    " the job",
    "docker_image": "stored as DockerImage; workers run jobs without a container",
    "container_image": "stored as ContainerImage; workers run jobs without a container",
    "match_list_length": "stored as LastMatchListLength; dfarm keeps no LastMatchName list",
    "want_ft_on_checkpoint": "stored as WantFTOnCheckpoint; a checkpoint always sends"
    " its checkpoint files (transfer_checkpoint_files) to the spool, never the outputs",
    "accounting_group": "stored as AcctGroup; fair share is by user",
    "accounting_group_user": "stored as AcctGroupUser; fair share is by user",
    "concurrency_limits": "stored as ConcurrencyLimits; dfarm has no concurrency limits",
    "leave_in_queue": "stored as LeaveJobInQueue; finished jobs go to the history",
    "transfer_output_remaps": "stored as TransferOutputRemaps; outputs keep their names",
    "allowed_execute_duration": "stored as AllowedExecuteDuration; only allowed_job_duration"
    " limits a run",
    "max_transfer_input_mb": "stored as MaxTransferInputMB; not checked",
    "max_transfer_output_mb": "stored as MaxTransferOutputMB; not checked",
    "next_job_start_delay": "stored as NextJobStartDelay; jobs start as soon as they match",
    "remote_initialdir": "stored as RemoteIwd; jobs run in their own sandbox",
}

#: Keys accepted and ignored: key -> why they have no effect here.
IGNORED: dict[str, str] = {}
_GROUPS = {
    "dfarm has no standard universe": (
        "allow_startup_script append_files buffer_files buffer_size buffer_block_size"
        " compress_files fetch_files file_remaps local_files want_remote_io"
        " want_remote_syscalls want_checkpoint"
    ),
    "dfarm has no grid universe": (
        "azure_admin_key azure_admin_username azure_auth_file azure_image azure_location"
        " azure_size batch_queue batch_project batch_runtime batch_extra_submit_args"
        " boinc_authenticator_file cream_attributes delegate_job_gsi_credentials_lifetime"
        " ec2_access_key_id ec2_ami_id ec2_availability_zone ec2_block_device_mapping"
        " ec2_ebs_volumes ec2_elastic_ip ec2_iam_profile_arn ec2_iam_profile_name"
        " ec2_instance_type ec2_keypair ec2_keypair_file ec2_parameter_names"
        " ec2_secret_access_key ec2_security_groups ec2_security_ids ec2_spot_price"
        " ec2_tag_names ec2_user_data ec2_user_data_file ec2_vpc_ip ec2_vpc_subnet"
        " gce_account gce_auth_file gce_image gce_json_file gce_machine_type gce_metadata"
        " gce_metadata_file gce_preemptible globus_rematch globus_resubmit globus_rsl"
        " grid_resource keystore_alias keystore_file keystore_passphrase_file"
        " myproxycredentialname myproxyhost myproxynewproxylifetime myproxypassword"
        " myproxyrefreshthreshold myproxyserverdn nordugrid_rsl transfer_error"
        " transfer_input transfer_output wantnametag arc_rte arc_resources arc_application"
    ),
    "dfarm has no vm universe": (
        "vm_disk vm_checkpoint vm_macaddr vm_memory vm_networking vm_networking_type"
        " vm_no_output_vm vm_type vm_vcpus vmware_dir vmware_should_transfer_files"
        " vmware_snapshot_disk xen_initrd xen_kernel xen_kernel_params xen_root"
    ),
    "dfarm has no java or parallel universe": (
        "jar_files java_vm_args machine_count hold_kill_sig remove_kill_sig"
    ),
    "workers run jobs without a container": (
        "docker_network_type docker_override_entrypoint container_target_dir"
        " container_service_names transfer_container mount_under_scratch want_job_networking"
    ),
    "dfarm runs jobs as their owner on its workers, with no such setting": (
        "run_as_owner load_profile rendezvousdir x509userproxy use_x509userproxy"
        " use_oauth_services encrypt_execute_directory"
    ),
    "files travel over dfarm's own transfer, with no such setting": (
        "encrypt_input_files encrypt_output_files dont_encrypt_input_files"
        " dont_encrypt_output_files output_destination transfer_plugins"
        " preserve_relative_paths copy_to_spool manifest manifest_dir"
    ),
    "output is sent back when the job ends (follow it with dtail)": (
        "stream_output stream_error stream_input erase_output_and_error_on_restart"
    ),
    "dfarm has no job deferral": (
        "cron_minute cron_hour cron_day_of_month"
        " cron_month cron_day_of_week cron_window cron_prep_time"
    ),
    "dfarm queues every job at once": "max_idle max_materialize",
    "dfarm keeps no such record": (
        "log_xml dagman_log job_machine_attrs_history_length ulog_execute_attrs"
        " starter_debug keep_claim_idle job_lease_duration want_io_proxy kill_sig_timeout"
    ),
    "dfarm has no concurrency limits": "concurrency_limits_expr",
    "dfarm has no such policy": (
        "periodic_vacate noop_job noop_job_exit_code noop_job_exit_signal nice_user stack_size"
    ),
}
for _why, _keys in _GROUPS.items():
    IGNORED.update(dict.fromkeys(_keys.split(), _why))
#: Accepted keys whose warning is their own.
_OWN_WARNING = {
    "skip_filechecks": "",  # dsub checks input files exist, as condor_submit does anyway
}
IGNORED.update(_OWN_WARNING)

#: Keys condor_submit 24 reads and does nothing with either: no warning.
_SILENT = frozenset({
    "periodic_remove_reason", "periodic_remove_subcode", "periodic_release_reason",
    "periodic_release_subcode",
})  # fmt: skip

#: Other spellings of a key -> the key, as condor_submit 24 reads them (case-insensitive).
ALIASES = {
    "SuccessCheckpointExitCode": "checkpoint_exit_code",
    "ShouldTransferFiles": "should_transfer_files",
    "WhenToTransferOutput": "when_to_transfer_output",
    "TransferInputFiles": "transfer_input_files",
    "TransferOutputFiles": "transfer_output_files",
    "TransferExecutable": "transfer_executable",
    "RequestMemory": "request_memory",
    "RequestCpus": "request_cpus",
    "RequestDisk": "request_disk",
    "RequestGPUs": "request_gpus",
    "NotifyUser": "notify_user",
    "JobNotification": "notification",
    "JobPrio": "priority",
    "JobMaxRetries": "max_retries",
    "Iwd": "initialdir",
    "initial_dir": "initialdir",
    "job_iwd": "initialdir",
    "env": "environment",
    "Args": "arguments",
    "UserLog": "log",
    "JobBatchName": "batch_name",
    "DockerImage": "docker_image",
    "OnExitHold": "on_exit_hold",
    "OnExitHoldReason": "on_exit_hold_reason",
    "OnExitHoldSubCode": "on_exit_hold_subcode",
    "OnExitRemove": "on_exit_remove",
    "PeriodicHold": "periodic_hold",
    "PeriodicHoldReason": "periodic_hold_reason",
    "PeriodicHoldSubCode": "periodic_hold_subcode",
    "PeriodicRelease": "periodic_release",
    "PeriodicRemove": "periodic_remove",
    "LastMatchListLength": "match_list_length",
    "AllowedJobDuration": "allowed_job_duration",
    "JobDescription": "description",
    "MaxTransferInputMB": "max_transfer_input_mb",
    "MaxTransferOutputMB": "max_transfer_output_mb",
    "KillSig": "kill_sig",
    "NextJobStartDelay": "next_job_start_delay",
    "JobLeaseDuration": "job_lease_duration",
    "ImageSize": "image_size",
    "ContainerImage": "container_image",
    "WantGracefulRemoval": "want_graceful_removal",
    "JobMaxVacateTime": "job_max_vacate_time",
    "TransferCheckpoint": "transfer_checkpoint_files",
    "JobSuccessExitCode": "success_exit_code",
    "MaxJobRetirementTime": "max_job_retirement_time",
    "LeaveJobInQueue": "leave_in_queue",
    "DeferralTime": "deferral_time",
    "EncryptExecuteDirectory": "encrypt_execute_directory",
    "JobMaterializeMaxIdle": "max_idle",
}

_ALIAS_OF = {alias.lower(): key for alias, key in ALIASES.items()}
#: Every key condor_submit knows (lower case), aliases included.
HTCONDOR_KEYS = frozenset(CARRIED_OUT | set(STORED) | set(IGNORED) | _SILENT | set(_ALIAS_OF))
#: The key under which ``+Name`` and ``MY.Name`` reach the parser (see ``submit_file``).
CUSTOM_PREFIX = "__my__."


def canonical(key: str) -> str:
    """The lower-case key that ``key`` spells."""
    low = key.lower()
    return _ALIAS_OF.get(low, low)


def warning_for(key: str, written: str) -> str | None:
    """What dsub says when ``key`` (canonical; ``written`` as the file spells it) is
    set and does not act here, and why; None when it acts or only informs."""
    if key in STORED:
        why = _STORED_WHY.get(key)
        return f"'{written}' is {why.format(attr=STORED[key][0])}" if why else None
    why = IGNORED.get(key)
    return f"'{written}' has no effect here: {why}" if why else None


def classad_value(text: str, kind: str) -> str:
    """A submit value as the ClassAd text HTCondor stores: strings quoted."""
    if kind == "names":
        text = ",".join(re.split(r"[\s,]+", text.strip(" \t,")))
    elif kind == "unquoted" and len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    elif kind not in ("string", "unquoted"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def suggestion(key: str) -> str | None:
    """The known key nearest to a misspelt one, if any is close."""
    names = sorted(HTCONDOR_KEYS - set(_ALIAS_OF) - _SILENT)
    close = difflib.get_close_matches(key.lower(), names, n=1, cutoff=0.75)
    return close[0] if close else None
