#!/usr/bin/env bash
# Once per AWS account and region: what cluster.yaml names and Ray cannot make safely itself.
#
#   aws/setup.sh --bucket BUCKET --ssh-cidr 203.0.113.7/32 [--region us-west-2]
#
# - a security group "ssl-priors" admitting SSH from --ssh-cidr only and all traffic between its
#   own members (Ray's own group would admit SSH from 0.0.0.0/0);
# - roles and instance profiles "ssl-priors-head" and "ssl-priors-worker": both may use BUCKET
#   (aws/*-policy.json with BUCKET filled in); the head may also start and stop EC2 instances
#   and hand workers the worker role (Ray's default role has EC2 and S3 full access);
# - the AWS Deep Learning Base AMI (NVIDIA driver, Docker, NVIDIA container toolkit) of the region;
# then writes the group's and the AMI's ids, and the region, into cluster.yaml. Run it again to
# change the SSH range: the group's SSH rule is replaced.
set -euo pipefail

region=us-west-2
bucket=""
ssh_cidr=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bucket) bucket="$2"; shift 2 ;;
    --ssh-cidr) ssh_cidr="$2"; shift 2 ;;
    --region) region="$2"; shift 2 ;;
    *) echo "aws/setup.sh: unknown argument $1; use --bucket BUCKET --ssh-cidr A.B.C.D/N [--region R]" >&2
       exit 2 ;;
  esac
done
if [ -z "$bucket" ] || [ -z "$ssh_cidr" ]; then
  echo "aws/setup.sh: --bucket and --ssh-cidr are required (your address as A.B.C.D/32)" >&2
  exit 2
fi
case "$ssh_cidr" in
  0.0.0.0/0|::/0) echo "aws/setup.sh: --ssh-cidr $ssh_cidr admits everyone; give your own range" >&2
                  exit 2 ;;
esac

here="$(cd "$(dirname "$0")" && pwd)"
config="$here/../cluster.yaml"
account="$(aws sts get-caller-identity --query Account --output text)"
export AWS_DEFAULT_REGION="$region"

# The security group, in the default VPC (where Ray puts nodes without SubnetIds).
vpc="$(aws ec2 describe-vpcs --filters Name=isDefault,Values=true --query 'Vpcs[0].VpcId' --output text)"
group="$(aws ec2 describe-security-groups --filters Name=group-name,Values=ssl-priors Name=vpc-id,Values="$vpc" \
         --query 'SecurityGroups[0].GroupId' --output text)"
if [ "$group" = "None" ]; then
  group="$(aws ec2 create-security-group --group-name ssl-priors --vpc-id "$vpc" \
           --description "ssl-priors Ray cluster: SSH from one range, all traffic inside" \
           --query GroupId --output text)"
  aws ec2 authorize-security-group-ingress --group-id "$group" \
    --ip-permissions "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$group}]" > /dev/null
fi
for old in $(aws ec2 describe-security-groups --group-ids "$group" \
               --query 'SecurityGroups[0].IpPermissions[?FromPort==`22`].IpRanges[].CidrIp' --output text); do
  aws ec2 revoke-security-group-ingress --group-id "$group" --protocol tcp --port 22 --cidr "$old" > /dev/null
done
aws ec2 authorize-security-group-ingress --group-id "$group" --protocol tcp --port 22 --cidr "$ssh_cidr" > /dev/null

# The roles and their instance profiles.
trust='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
for role in ssl-priors-worker ssl-priors-head; do
  policy="$(sed -e "s/BUCKET/$bucket/g" -e "s/ACCOUNT/$account/g" "$here/${role#ssl-priors-}-policy.json")"
  aws iam get-role --role-name "$role" > /dev/null 2>&1 \
    || aws iam create-role --role-name "$role" --assume-role-policy-document "$trust" > /dev/null
  aws iam put-role-policy --role-name "$role" --policy-name "$role" --policy-document "$policy"
  if ! aws iam get-instance-profile --instance-profile-name "$role" > /dev/null 2>&1; then
    aws iam create-instance-profile --instance-profile-name "$role" > /dev/null
    aws iam add-role-to-instance-profile --instance-profile-name "$role" --role-name "$role"
  fi
done

# The GPU AMI, as AWS publishes its id for the region.
ami="$(aws ssm get-parameter --name /aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id \
       --query Parameter.Value --output text)"

sed -i.bak -E -e "s/^( +ImageId: )[A-Za-z0-9_-]+$/\1$ami/" \
  -e "s/^( +SecurityGroupIds: \[)[A-Za-z0-9_-]+\]$/\1$group]/" \
  -e "s/^(  region: ).*/\1$region/" -e "s/^(  availability_zone: ).*/\1${region}a,${region}b/" "$config"
rm -f "$config.bak"
echo "cluster.yaml: ImageId $ami, SecurityGroupIds [$group] (SSH from $ssh_cidr), region $region;"
echo "instance profiles ssl-priors-head and ssl-priors-worker may use s3://$bucket. Next: ray up cluster.yaml"
