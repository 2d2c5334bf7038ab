# Sample Packer project for opsy-ami-operator: builds an AMI from the base AMI the PackerBuilder found.
# The controller passes `ami_id` and `region` as -var and `build_id` as PKR_VAR_build_id; `ec2_endpoint` is only
# set when building against an emulator.
# `communicator = "none"` keeps the sample self-contained (no SSH); real projects provision with a communicator.

variable "ami_id" {
  type        = string
  description = "Base AMI, passed by the controller as -var ami_id=..."
}

variable "region" {
  type        = string
  description = "AWS region, passed by the controller as -var region=..."
}

variable "ec2_endpoint" {
  type        = string
  default     = ""
  description = "Custom EC2 endpoint (the test emulator); empty for AWS."
}

variable "build_id" {
  type        = string
  default     = ""
  description = "Set by the controller in every build container as PKR_VAR_build_id; tagging the AMI with it lets the controller check that the reported AMI is this build's."
}

variable "ami_name_prefix" {
  type    = string
  default = "opsy-eks-node"
}

source "amazon-ebs" "node" {
  region                      = var.region
  source_ami                  = var.ami_id
  instance_type               = "t3.micro"
  ami_name                    = "${var.ami_name_prefix}-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  communicator                = "none"
  custom_endpoint_ec2         = var.ec2_endpoint
  skip_region_validation      = true
  skip_credential_validation  = true
  skip_metadata_api_check     = true
  tags                        = var.build_id == "" ? {} : { "build-id" = var.build_id }
}

build {
  sources = ["source.amazon-ebs.node"]
}
