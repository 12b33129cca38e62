/** Every store over one connection or transaction: `stores(tx).devices.byMac(…)`. */
import type { Sql } from "./db.ts";
import { AdminStore } from "./admin-store.ts";
import { DeviceStore } from "./device-store.ts";
import { CollectionStore } from "./collection-store.ts";
import { VariableStore } from "./variable-store.ts";
import { TaskSequenceStore } from "./task-sequence-store.ts";
import { DeploymentStore } from "./deployment-store.ts";
import { CertificateStore } from "./certificate-store.ts";
import { EnrollmentStore } from "./enrollment-store.ts";
import { RunStore } from "./run-store.ts";
import { BootImageStore } from "./boot-image-store.ts";
import { LeaseStore } from "./lease-store.ts";
import { ContentStore } from "./content-store.ts";
import { DistributionPointStore } from "./distribution-point-store.ts";
import { DeviceTpmStore } from "./device-tpm-store.ts";
import { AssociationStore } from "./association-store.ts";
import { SiteSettingsStore } from "./site-settings-store.ts";

export type Stores = {
  admins: AdminStore; devices: DeviceStore; collections: CollectionStore; variables: VariableStore;
  taskSequences: TaskSequenceStore; deployments: DeploymentStore; certificates: CertificateStore;
  enrollment: EnrollmentStore; runs: RunStore; bootImages: BootImageStore; leases: LeaseStore;
  content: ContentStore; distributionPoints: DistributionPointStore; deviceTpm: DeviceTpmStore; settings: SiteSettingsStore;
  associations: AssociationStore;
};

export function stores(sql: Sql): Stores {
  return {
    admins: new AdminStore(sql), devices: new DeviceStore(sql), collections: new CollectionStore(sql),
    variables: new VariableStore(sql), taskSequences: new TaskSequenceStore(sql), deployments: new DeploymentStore(sql),
    certificates: new CertificateStore(sql), enrollment: new EnrollmentStore(sql), runs: new RunStore(sql),
    bootImages: new BootImageStore(sql), leases: new LeaseStore(sql), content: new ContentStore(sql),
    distributionPoints: new DistributionPointStore(sql), deviceTpm: new DeviceTpmStore(sql), settings: new SiteSettingsStore(sql),
    associations: new AssociationStore(sql),
  };
}
