/* Prints the KVM/SEV UAPI values nacre pins (host/src/vmm/uapi.rs, docs/kvm-uapi.md).
 * Built against a kernel's UAPI headers by ci/uapi-probe/run.sh. */
#include <stdio.h>
#include <stddef.h>
#include <linux/kvm.h>
#include <linux/kvm_para.h>
#include <linux/psp-sev.h>
#define V(x) printf("%-40s %#llx\n", #x, (unsigned long long)(x))
#define S(t) printf("%-40s %zu\n", "sizeof " #t, sizeof(t))
#define O(t,f) printf("%-40s %zu\n", "offsetof " #t "." #f, offsetof(t,f))
int main(void){
V(KVM_CREATE_VM);V(KVM_CHECK_EXTENSION);V(KVM_MEMORY_ENCRYPT_OP);V(KVM_CREATE_GUEST_MEMFD);V(KVM_SET_MEMORY_ATTRIBUTES);
V(KVM_SET_USER_MEMORY_REGION2);V(KVM_GET_DEVICE_ATTR);V(KVM_HAS_DEVICE_ATTR);V(KVM_ENABLE_CAP);V(KVM_PRE_FAULT_MEMORY);V(KVM_SET_TSC_KHZ);V(SEV_ISSUE_CMD);V(KVM_GET_API_VERSION);
S(struct kvm_sev_cmd);O(struct kvm_sev_cmd,data);O(struct kvm_sev_cmd,error);O(struct kvm_sev_cmd,sev_fd);
S(struct kvm_sev_init);O(struct kvm_sev_init,flags);O(struct kvm_sev_init,ghcb_version);O(struct kvm_sev_init,pad2);
S(struct kvm_sev_snp_launch_start);O(struct kvm_sev_snp_launch_start,gosvw);O(struct kvm_sev_snp_launch_start,flags);O(struct kvm_sev_snp_launch_start,pad1);
S(struct kvm_sev_snp_launch_update);O(struct kvm_sev_snp_launch_update,uaddr);O(struct kvm_sev_snp_launch_update,len);O(struct kvm_sev_snp_launch_update,type);O(struct kvm_sev_snp_launch_update,flags);O(struct kvm_sev_snp_launch_update,pad2);
S(struct kvm_sev_snp_launch_finish);O(struct kvm_sev_snp_launch_finish,id_auth_uaddr);O(struct kvm_sev_snp_launch_finish,id_block_en);O(struct kvm_sev_snp_launch_finish,auth_key_en);O(struct kvm_sev_snp_launch_finish,vcek_disabled);O(struct kvm_sev_snp_launch_finish,host_data);O(struct kvm_sev_snp_launch_finish,flags);O(struct kvm_sev_snp_launch_finish,pad1);
S(struct kvm_tdx_cmd);O(struct kvm_tdx_cmd,flags);O(struct kvm_tdx_cmd,data);O(struct kvm_tdx_cmd,hw_error);
S(struct kvm_tdx_capabilities);O(struct kvm_tdx_capabilities,supported_xfam);O(struct kvm_tdx_capabilities,kernel_tdvmcallinfo_1_r11);O(struct kvm_tdx_capabilities,user_tdvmcallinfo_1_r11);O(struct kvm_tdx_capabilities,kernel_tdvmcallinfo_1_r12);O(struct kvm_tdx_capabilities,user_tdvmcallinfo_1_r12);O(struct kvm_tdx_capabilities,reserved);O(struct kvm_tdx_capabilities,cpuid);
S(struct kvm_tdx_init_vm);O(struct kvm_tdx_init_vm,xfam);O(struct kvm_tdx_init_vm,mrconfigid);O(struct kvm_tdx_init_vm,mrowner);O(struct kvm_tdx_init_vm,mrownerconfig);O(struct kvm_tdx_init_vm,reserved);O(struct kvm_tdx_init_vm,cpuid);
S(struct kvm_tdx_init_mem_region);O(struct kvm_tdx_init_mem_region,gpa);O(struct kvm_tdx_init_mem_region,nr_pages);
S(struct kvm_userspace_memory_region2);O(struct kvm_userspace_memory_region2,guest_phys_addr);O(struct kvm_userspace_memory_region2,memory_size);O(struct kvm_userspace_memory_region2,userspace_addr);O(struct kvm_userspace_memory_region2,guest_memfd_offset);O(struct kvm_userspace_memory_region2,guest_memfd);
S(struct kvm_create_guest_memfd);S(struct kvm_memory_attributes);O(struct kvm_memory_attributes,size);O(struct kvm_memory_attributes,attributes);O(struct kvm_memory_attributes,flags);
S(struct kvm_device_attr);S(struct kvm_enable_cap);S(struct kvm_cpuid2);S(struct kvm_cpuid_entry2);
S(struct kvm_run);O(struct kvm_run,exit_reason);O(struct kvm_run,hypercall.nr);O(struct kvm_run,hypercall.args);O(struct kvm_run,hypercall.ret);O(struct kvm_run,hypercall.flags);
O(struct kvm_run,memory_fault.flags);O(struct kvm_run,memory_fault.gpa);O(struct kvm_run,memory_fault.size);
O(struct kvm_run,tdx.flags);O(struct kvm_run,tdx.nr);O(struct kvm_run,tdx.get_quote.ret);O(struct kvm_run,tdx.get_quote.gpa);O(struct kvm_run,tdx.get_quote.size);
O(struct kvm_run,tdx.get_tdvmcall_info.leaf);O(struct kvm_run,tdx.get_tdvmcall_info.r11);O(struct kvm_run,tdx.get_tdvmcall_info.r12);O(struct kvm_run,tdx.get_tdvmcall_info.r13);O(struct kvm_run,tdx.get_tdvmcall_info.r14);O(struct kvm_run,tdx.setup_event_notify.vector);O(struct kvm_run,tdx.setup_event_notify.ret);
O(struct kvm_run,snp_req_certs.gpa);O(struct kvm_run,snp_req_certs.npages);O(struct kvm_run,snp_req_certs.ret);
O(struct kvm_run,system_event.type);O(struct kvm_run,system_event.ndata);O(struct kvm_run,system_event.data);
O(struct kvm_run,io.direction);O(struct kvm_run,io.size);O(struct kvm_run,io.port);O(struct kvm_run,io.count);O(struct kvm_run,io.data_offset);
S(struct sev_issue_cmd);O(struct sev_issue_cmd,data);O(struct sev_issue_cmd,error);S(struct sev_user_data_snp_status);O(struct sev_user_data_snp_status,state);O(struct sev_user_data_snp_status,build_id);O(struct sev_user_data_snp_status,guest_count);O(struct sev_user_data_snp_status,current_tcb_version);O(struct sev_user_data_snp_status,reported_tcb_version);
S(struct sev_user_data_status);
V(KVM_EXIT_IO);V(KVM_EXIT_HYPERCALL);V(KVM_EXIT_MMIO);V(KVM_EXIT_SHUTDOWN);V(KVM_EXIT_SYSTEM_EVENT);V(KVM_EXIT_MEMORY_FAULT);V(KVM_EXIT_TDX);V(KVM_EXIT_SNP_REQ_CERTS);
V(KVM_SYSTEM_EVENT_SEV_TERM);V(KVM_SYSTEM_EVENT_TDX_FATAL);V(KVM_EXIT_HYPERCALL_LONG_MODE);
V(KVM_X86_DEFAULT_VM);V(KVM_X86_SW_PROTECTED_VM);V(KVM_X86_SEV_VM);V(KVM_X86_SEV_ES_VM);V(KVM_X86_SNP_VM);V(KVM_X86_TDX_VM);
V(KVM_CAP_EXIT_HYPERCALL);V(KVM_CAP_SPLIT_IRQCHIP);V(KVM_CAP_USER_MEMORY2);V(KVM_CAP_MEMORY_FAULT_INFO);V(KVM_CAP_MEMORY_ATTRIBUTES);V(KVM_CAP_GUEST_MEMFD);V(KVM_CAP_VM_TYPES);V(KVM_CAP_PRE_FAULT_MEMORY);V(KVM_CAP_X86_APIC_BUS_CYCLES_NS);V(KVM_CAP_GUEST_MEMFD_FLAGS);V(KVM_CAP_X86_USER_SPACE_MSR);V(KVM_CAP_X86_MSR_FILTER);
V(KVM_MEM_GUEST_MEMFD);V(KVM_MEMORY_ATTRIBUTE_PRIVATE);V(KVM_MEMORY_EXIT_FLAG_PRIVATE);V(KVM_HC_MAP_GPA_RANGE);V(KVM_MAP_GPA_RANGE_PAGE_SZ_4K);V(KVM_MAP_GPA_RANGE_PAGE_SZ_2M);V(KVM_MAP_GPA_RANGE_PAGE_SZ_1G);V(KVM_MAP_GPA_RANGE_ENCRYPTED);V(KVM_MAP_GPA_RANGE_DECRYPTED);
V(KVM_X86_GRP_SEV);V(KVM_X86_SEV_VMSA_FEATURES);V(KVM_X86_SNP_POLICY_BITS);V(KVM_X86_SEV_SNP_REQ_CERTS);V(KVM_TDX_MEASURE_MEMORY_REGION);V(GUEST_MEMFD_FLAG_MMAP);V(GUEST_MEMFD_FLAG_INIT_SHARED);
V(KVM_SEV_INIT2);V(KVM_SEV_SNP_LAUNCH_START);V(KVM_SEV_SNP_LAUNCH_UPDATE);V(KVM_SEV_SNP_LAUNCH_FINISH);V(KVM_SEV_SNP_ENABLE_REQ_CERTS);
V(KVM_SEV_SNP_PAGE_TYPE_NORMAL);V(KVM_SEV_SNP_PAGE_TYPE_ZERO);V(KVM_SEV_SNP_PAGE_TYPE_UNMEASURED);V(KVM_SEV_SNP_PAGE_TYPE_SECRETS);V(KVM_SEV_SNP_PAGE_TYPE_CPUID);
V(KVM_SEV_SNP_ID_BLOCK_SIZE);V(KVM_SEV_SNP_ID_AUTH_SIZE);V(KVM_SEV_SNP_FINISH_DATA_SIZE);
V(KVM_TDX_CAPABILITIES);V(KVM_TDX_INIT_VM);V(KVM_TDX_INIT_VCPU);V(KVM_TDX_INIT_MEM_REGION);V(KVM_TDX_FINALIZE_VM);V(KVM_TDX_GET_CPUID);
V(SNP_PLATFORM_STATUS);V(SEV_PLATFORM_STATUS);
V(KVM_RUN);V(KVM_GET_SUPPORTED_CPUID);
return 0;}
